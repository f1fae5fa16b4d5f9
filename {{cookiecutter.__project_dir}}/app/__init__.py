"""{{ cookiecutter.project_name }}: {{ cookiecutter.description }}"""

# The one place the version is written. It ships inside the image with the code it describes, so
# the running app reports it (OpenAPI) without packaging metadata; `make` and CI read this line for
# the image's OCI version label and its release tag (a version tag vX.Y.Z must match it).
__version__ = "0.1.0"
