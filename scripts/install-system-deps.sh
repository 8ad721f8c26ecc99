#!/usr/bin/env bash
# Debian packages the tests use as real parts: mosquitto (MQTT broker), ffmpeg (H.264 clips),
# GStreamer's RTSP server for /usr/bin/python3 (python3-gi + gir1.2-gst-rtsp-server-1.0),
# openssl (TLS certs), systemd (systemd-analyze) and chromium (the review page's browser test, driven
# by Playwright through its executable_path: no browser download). Installed only when missing and running as root;
# otherwise the tests that need them skip and say why.
set -euo pipefail

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ! /usr/bin/python3 -c "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); from gi.repository import GstRtspServer" >/dev/null 2>&1; then
  missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
            gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system packages missing (not root, not installing; those tests will skip): ${missing[*]}" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
