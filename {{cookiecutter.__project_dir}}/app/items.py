"""The example resource: items written to and read from the `items` table.

A model (the table, migrated by app/alembic/versions/), the API's schemas, and three endpoints
(create, read one, list a page): the shape to copy for the service's own resources.
"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, String, select
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Session

router = APIRouter(prefix="/items", tags=["items"])

# The ids: BIGINT in the table, so a path or query value within this bound never overflows it.
MAX_ID = 2**63 - 1
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]


def storable(text: str) -> str:
    """Text PostgreSQL can store: no NUL character, no lone surrogate (JSON's \\ud800 escapes)."""
    if "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return text


# Every text field from clients: a 422 for what the database would refuse with a 500.
Text = Annotated[str, AfterValidator(storable)]


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class ItemIn(BaseModel):
    """What a client sends."""

    name: Text = Field(min_length=1, max_length=200)


class ItemOut(ItemIn):
    """What the API answers: the stored row."""

    model_config = ConfigDict(from_attributes=True)

    id: int


class ItemPage(BaseModel):
    """A page of items in id order; `next` is the `after` of the next page (null on the last)."""

    items: list[ItemOut]
    next: int | None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"headers": {"Location": {"description": "the new item's URL"}}},
        400: {"description": "the body cannot be decoded (not UTF-8 text)"},
        413: {"description": "the body is larger than MAX_BODY_SIZE"},
    },
)
async def create_item(
    item: ItemIn, session: Session, request: Request, response: Response
) -> ItemOut:
    row = Item(name=item.name)
    session.add(row)
    await session.commit()  # the row and its id are kept: the sessions do not expire on commit
    # A path, under the root path the app is served at (UVICORN_ROOT_PATH, a proxy's prefix).
    response.headers["Location"] = request.url_for("read_item", item_id=row.id).path
    return ItemOut.model_validate(row)


@router.api_route("", methods=["GET", "HEAD"])
async def list_items(
    session: Session,
    # Keyset pagination: the ids after this one. Unlike an offset, it stays fast on any page
    # and skips or repeats nothing while rows are added.
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> ItemPage:
    query = select(Item).where(Item.id > after).order_by(Item.id).limit(limit)
    rows = (await session.scalars(query)).all()
    last = rows[-1].id if len(rows) == limit else None
    return ItemPage(items=[ItemOut.model_validate(row) for row in rows], next=last)


@router.api_route(
    "/{item_id}",
    methods=["GET", "HEAD"],
    responses={404: {"description": "no item with this id"}},
)
async def read_item(item_id: ItemId, session: Session) -> ItemOut:
    row = await session.get(Item, item_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no item {item_id}")
    return ItemOut.model_validate(row)
