from typing import Union

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def read_root():
    return {"Hello": "World"}


@app.get("/items/{item_id}")
def read_item(item_id: int, q: Union[str, None] = None):  # noqa: UP007 (the tutorial's spelling)
    return {"item_id": item_id, "q": q}


# Added for the benchmark, so that it is probed like the generated service.
@app.get("/health")
def health():
    return {"status": "ok"}
