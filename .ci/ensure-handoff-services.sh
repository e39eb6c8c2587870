#!/usr/bin/env bash
# Make sure the brokers the hand-off task tests use answer on loopback: Redis on 6379,
# NATS with JetStream on 4222, RabbitMQ on 5672 (guest/guest). Each is used as it is if
# it answers, started if it is installed but stopped, installed with apt-get (Debian's
# package) only when its program is missing.
set -euo pipefail

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {  # name port seconds
    for _ in $(seq 1 "$3"); do answers "$2" && return 0; sleep 1; done
    echo "ci: $1 does not answer on 127.0.0.1:$2" >&2
    exit 1
}

install_missing() {  # program package
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
        echo "ci: installing $2" >&2
        if [ -z "${_apt_updated:-}" ]; then apt-get update -qq; _apt_updated=1; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
}

# Redis
if ! answers 6379; then
    install_missing redis-server redis-server
    mkdir -p /var/lib/redis /var/log/redis
    echo "ci: starting redis-server" >&2
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis 6379 30
fi
echo "ci: Redis ready on 127.0.0.1:6379" >&2

# NATS with JetStream
if ! answers 4222; then
    install_missing nats-server nats-server
    mkdir -p /var/lib/nats-server
    echo "ci: starting nats-server (JetStream)" >&2
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for NATS 4222 30
fi
echo "ci: NATS ready on 127.0.0.1:4222" >&2

# RabbitMQ
if ! answers 5672; then
    install_missing rabbitmq-server rabbitmq-server
    echo "ci: starting rabbitmq-server" >&2
    rabbitmq-server -detached
    wait_for RabbitMQ 5672 120
fi
echo "ci: RabbitMQ ready on 127.0.0.1:5672" >&2
