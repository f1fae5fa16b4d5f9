FROM python:3.13
WORKDIR /code
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY ./requirements.txt /code/requirements.txt
RUN pip install --no-cache-dir --upgrade -r /code/requirements.txt
COPY ./main.py /code/main.py
CMD ["uvicorn", "main:app"]
