# One image for every Mailer service: docker-compose.yml and deploy/k8s/ pick the
# service through the command (uvicorn services.<name>.app:create_app --factory).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, read from pyproject.toml alone, so that a change in the source does
# not reinstall them (the layer is rebuilt only when pyproject.toml changes). Every
# dependency ships manylinux wheels for 3.11, so the slim image needs no compiler.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY shared/ shared/
COPY services/ services/
COPY devtools/ devtools/
# A regular (non-editable) install, so the SQL migrations and templates travel as package data.
RUN pip install --no-deps . && rm -rf build *.egg-info

# A numeric UID: Kubernetes can only verify runAsNonRoot against a numeric USER.
RUN groupadd --system --gid 10001 mailer \
    && useradd --system --uid 10001 --gid mailer --no-create-home --shell /usr/sbin/nologin mailer
USER 10001:10001

EXPOSE 8000
CMD ["uvicorn", "services.campaign.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
