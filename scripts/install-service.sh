#!/usr/bin/env bash
# Install raccoon_watch as a systemd service (see docs/service.md). Run as root; idempotent.
#
#   scripts/install-service.sh [--dry-run]         (or: sudo make install-service)
#
# PREFIX   where the code and its venv live (default /opt/raccoon-watch; the unit's ExecStart=
#          points there). PREFIX equal to this checkout installs in place (no copy).
# EXTRAS   pip extras (default "cpu"; "gpu" for tensorflow[and-cuda]).
# PYTHON   interpreter for the venv (default python3, needs 3.11+).
# DESTDIR  prefix for the /etc and /var paths written (packaging or a trial run; default none).
#
# Steps: copy the code -> venv + editable install (models/ stays beside the package) -> config in
# /etc/raccoon-watch/config.yaml if absent (storage at /var/lib/raccoon-watch) -> credential files
# (root-only, 0600; empty until you fill them) -> the unit -> daemon-reload + enable --now when
# systemd runs, else the commands to run.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${PREFIX:-/opt/raccoon-watch}"
EXTRAS="${EXTRAS-cpu}"  # EXTRAS= (empty): no extras
PYTHON="${PYTHON:-python3}"
DESTDIR="${DESTDIR:-}"
ETC="$DESTDIR/etc/raccoon-watch"
CREDS="$ETC/credentials"
UNIT_DIR="$DESTDIR/etc/systemd/system"
UNIT=raccoon-watch.service
STATE=/var/lib/raccoon-watch
CREDENTIALS=(pushover_token pushover_user mqtt_password)  # must match LoadCredential= in the unit
STOCK_MODEL=coco_ssd_mobilenet_v1_0.75_quant_300.tflite
DRY_RUN=0

for arg in "$@"; do
  case "$arg" in
    --dry-run|-n) DRY_RUN=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install-service: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

step() { echo "+ $*"; [ "$DRY_RUN" = 1 ] || "$@"; }
note() { echo "install-service: $*"; }

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-service: run as root (sudo make install-service), or --dry-run to see the steps" >&2
  exit 1
fi

# 1. code
if [ "$(realpath -m "$PREFIX")" != "$SRC" ]; then
  step mkdir -p "$PREFIX"
  if command -v rsync >/dev/null 2>&1; then
    step rsync -a --delete --exclude=/.venv --exclude=/var --exclude=/.git --exclude=__pycache__ \
      --exclude='*.egg-info' "$SRC/" "$PREFIX/"
  else
    echo "+ tar -C $SRC -c . (without .venv var .git) | tar -C $PREFIX -x"
    [ "$DRY_RUN" = 1 ] || tar -C "$SRC" --exclude=./.venv --exclude=./var --exclude=./.git \
      --exclude=__pycache__ --exclude='*.egg-info' -cf - . | tar -C "$PREFIX" -xf -
  fi
fi

# 2. venv (editable: the package finds models/raccoon beside it)
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
  step "$PYTHON" -m venv "$PREFIX/.venv"
fi
step "$PREFIX/.venv/bin/pip" install -q --upgrade pip
lock=()
[ -f "$PREFIX/requirements.lock" ] && lock=(-c "$PREFIX/requirements.lock")
step "$PREFIX/.venv/bin/pip" install -q "${lock[@]}" -e "$PREFIX${EXTRAS:+[$EXTRAS]}"

# 3. config (never overwritten)
step install -d -m 0755 "$ETC" "$UNIT_DIR"
if [ ! -e "$ETC/config.yaml" ]; then
  echo "+ sed 's#^  path: ./var#  path: $STATE#' $SRC/config.example.yaml > $ETC/config.yaml"
  if [ "$DRY_RUN" = 0 ]; then
    sed "s#^  path: ./var\$#  path: $STATE#" "$SRC/config.example.yaml" > "$ETC/config.yaml"
    chmod 0644 "$ETC/config.yaml"
  fi
else
  note "$ETC/config.yaml exists, left as is"
fi

# 4. credentials: root-only files, copied by systemd into \$CREDENTIALS_DIRECTORY for the service.
#    The config refers to them as ${cred:pushover_token} etc. Empty files are fine when unused.
step install -d -m 0700 "$CREDS"
for name in "${CREDENTIALS[@]}"; do
  if [ ! -e "$CREDS/$name" ]; then
    step install -m 0600 /dev/null "$CREDS/$name"
  fi
done

# 5. model: without a bundled models/raccoon model the daemon falls back to the stock COCO model in
#    $RACCOON_SHARED/pretrained; give the service its own copy (outside the code tree).
if ! ls "$PREFIX/models/raccoon/"*.tflite "$PREFIX/models/raccoon/saved_model.pb" >/dev/null 2>&1; then
  shared="${RACCOON_SHARED:-$SRC/../shared}"
  if [ -f "$shared/pretrained/$STOCK_MODEL" ]; then
    step install -d -m 0755 "$PREFIX/shared/pretrained" "$UNIT_DIR/$UNIT.d"
    step install -m 0644 "$shared/pretrained/$STOCK_MODEL" "$PREFIX/shared/pretrained/"
    echo "+ write $UNIT_DIR/$UNIT.d/shared-model.conf (Environment=RACCOON_SHARED=$PREFIX/shared)"
    [ "$DRY_RUN" = 1 ] || printf '[Service]\nEnvironment=RACCOON_SHARED=%s/shared\n' "$PREFIX" \
      > "$UNIT_DIR/$UNIT.d/shared-model.conf"
  else
    note "no bundled raccoon model and no stock model at $shared/pretrained: set detector.model in $ETC/config.yaml"
  fi
fi

# 6. the unit (ExecStart= follows PREFIX)
echo "+ install $SRC/systemd/$UNIT -> $UNIT_DIR/$UNIT (ExecStart under $PREFIX)"
if [ "$DRY_RUN" = 0 ]; then
  sed "s#/opt/raccoon-watch/#$PREFIX/#g" "$SRC/systemd/$UNIT" > "$UNIT_DIR/$UNIT.tmp"
  chmod 0644 "$UNIT_DIR/$UNIT.tmp"
  mv "$UNIT_DIR/$UNIT.tmp" "$UNIT_DIR/$UNIT"
fi
# the retrain units (README "Learns your porch"): installed, never enabled here (the timer is off by default)
for extra in raccoon-watch-retrain.service raccoon-watch-retrain.timer; do
  echo "+ install $SRC/systemd/$extra -> $UNIT_DIR/$extra (not enabled)"
  if [ "$DRY_RUN" = 0 ]; then
    sed "s#/opt/raccoon-watch/#$PREFIX/#g" "$SRC/systemd/$extra" > "$UNIT_DIR/$extra.tmp"
    chmod 0644 "$UNIT_DIR/$extra.tmp"
    mv "$UNIT_DIR/$extra.tmp" "$UNIT_DIR/$extra"
  fi
done
getent group render >/dev/null 2>&1 || note "group 'render' does not exist: remove it from SupplementaryGroups= (drop-in)"

# 7. start
if [ -d /run/systemd/system ]; then
  step systemctl daemon-reload
  step systemctl enable --now "$UNIT"
  note "running: systemctl status raccoon-watch; journalctl -u raccoon-watch -f"
else
  note "systemd is not running here; on the target machine run:"
  echo "    systemctl daemon-reload && systemctl enable --now $UNIT"
fi
note "edit $ETC/config.yaml (cameras), put secrets in $CREDS/*, then: systemctl reload-or-restart raccoon-watch"
