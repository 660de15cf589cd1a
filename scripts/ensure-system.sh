#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: Chromium for the browser
# tests (Playwright cannot download its own browsers here), PostgreSQL for the team-stack tests and
# podman (with runc: crun fails on this kind of machine) for the container checks, and the DICOM tools.
# Needs root or passwordless sudo; idempotent, and a no-op when everything is there.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v podman >/dev/null 2>&1 || missing+=(podman runc)
# The DICOM node's tests talk to real DICOM software: DCMTK (storescu, dsrdump), dicom3tools
# (dciodvfy, the IOD validator) and Orthanc with its DICOMweb plugin as the PACS.
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || missing+=(orthanc-dicomweb)
# A real Prometheus scrapes the web UI's and the DICOM node's /metrics in the monitoring test.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# postgresql's post-install creates a default cluster; the project never uses it (its own data folder, own port)
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
