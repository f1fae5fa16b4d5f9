"""What the template's test modules and the benchmark (benchmark/) share, one copy of each.

    project     the template's paths and answers: bake(), cookiecutter_cli(), make(), choices(),
                pairwise(), case_id(), LEFTOVER_JINJA, tool(), the answer sets
    docker      the docker CLI: docker(), unique(), build_flags(), buildx_build(), docker_problem(),
                image sizes (size_above_base)
    compose     docker compose as the generated README runs it: compose_env(), compose(), Stack, ...
    swarm       compose.yaml as a Swarm stack: host_mode_stack_file(), healthy_task_ports(), where
                its tasks run (nodes(), tasks(), endpoints()), BalancingClient, ...
    generated   reading a generated project's files: load_yaml(), k8s_objects(), pins(), ...
    net         free loopback ports
    polling     HTTP requests to the service (get(), request_json(), request(), post_streamed())
                and wait_until()
    apitest     schemathesis run against a running service, seeded and bounded
    buildkit    BuildKit plain-progress logs: were the dependency layers cached?
    applog      the generated service's JSON log lines
    dockerfile  a small Dockerfile reader
    hooks       the template's hooks imported as modules, rendered as cookiecutter renders them

Vocabulary: an *answer set* is a dict of answers to cookiecutter.json's questions (the defaults fill
in the rest); `case_id()` names one. A *complete* answer set turns every deployment option on.

Importable as `tests.support.<module>` with the repository root on sys.path (pytest's `pythonpath`
in pyproject.toml; `python -m benchmark` run from the root). Nothing here imports pytest.
"""
