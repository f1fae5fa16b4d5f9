"""The example resource: items written to and read from the `items` table.

A model (the table, migrated by app/alembic/versions/), the API's schemas, and two endpoints: the
shape to copy for the service's own resources.
"""

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Session

router = APIRouter(prefix="/items", tags=["items"])


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class ItemIn(BaseModel):
    """What a client sends."""

    name: str = Field(min_length=1, max_length=200)


class ItemOut(ItemIn):
    """What the API answers: the stored row."""

    model_config = ConfigDict(from_attributes=True)

    id: int


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_item(item: ItemIn, session: Session) -> ItemOut:
    row = Item(name=item.name)
    session.add(row)
    await session.commit()  # the row and its id are kept: the sessions do not expire on commit
    return ItemOut.model_validate(row)


@router.get("/{item_id}")
async def read_item(item_id: int, session: Session) -> ItemOut:
    row = await session.get(Item, item_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no item {item_id}")
    return ItemOut.model_validate(row)
