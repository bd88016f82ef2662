# Backflush Gateway. By default: load the demo master data (loading again changes
# nothing) and run the gateway against the demo mapping, ledger in /data.
#   docker build -t backflush-gateway .
#   docker run --rm --network host backflush-gateway python -m simulators.opcua_plc --demo   # simulated PLC
#   docker run --rm --network host -v gateway-data:/data backflush-gateway                   # the gateway
# Your plant: mount a mapping and pass a command, e.g.
#   docker run … backflush-gateway gateway run --mapping /config/plant.yaml --db postgresql+psycopg://…
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LEDGER=sqlite:////data/ledger.sqlite
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY simulators ./simulators
COPY mappings ./mappings
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 gateway \
    && mkdir -p /data && chown gateway /data
USER gateway
VOLUME ["/data"]
# `exec` hands PID 1 to the gateway, so SIGTERM reaches it and pending units are confirmed.
CMD ["sh", "-c", "gateway masterdata load mappings/demo-masterdata.yaml --db \"$LEDGER\" && exec gateway run --mapping mappings/demo-plant.yaml --db \"$LEDGER\" --log-json"]
