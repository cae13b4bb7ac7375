#!/usr/bin/env bash
# Install the Orthanc DICOM server and its DICOMweb plugin from Debian's packages, if missing.
#
# Usage: bash scripts/setup_orthanc.sh      (needs root, or sudo, for apt-get)
#
# The tests start their own Orthanc on 127.0.0.1 with a free port and a configuration file in a
# temporary folder. The packaged system service is kept from starting during the installation, so
# nothing listens on Orthanc's default ports (4242, 8042) because of this script.
set -euo pipefail

dicomweb_plugin="/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
if command -v Orthanc >/dev/null && [[ -f "$dicomweb_plugin" ]]; then
    echo "setup_orthanc: $(command -v Orthanc) and $dicomweb_plugin are installed"
    exit 0
fi

sudo_cmd=()
if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "setup_orthanc: installing Orthanc needs root; run 'apt-get install orthanc orthanc-dicomweb' as root" >&2
        exit 1
    fi
    sudo_cmd=(sudo)
fi

# invoke-rc.d runs policy-rc.d to decide whether a package may start its service; exit code 101 means no.
policy_file="/usr/sbin/policy-rc.d"
created_policy=0
if [[ ! -e "$policy_file" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy_file" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy_file"
    created_policy=1
fi
remove_policy() {
    if [[ "$created_policy" == 1 ]]; then
        "${sudo_cmd[@]}" rm -f "$policy_file"
    fi
}
trap remove_policy EXIT

start_seconds=$SECONDS
echo "setup_orthanc: installing orthanc and orthanc-dicomweb with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb; then
    echo "setup_orthanc: apt-get install failed; refreshing the package lists and retrying once"
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb
fi

if [[ ! -f "$dicomweb_plugin" ]]; then
    echo "setup_orthanc: $dicomweb_plugin is missing after the installation; check 'dpkg -L orthanc-dicomweb'" >&2
    exit 1
fi
echo "setup_orthanc: done in $((SECONDS - start_seconds)) s"
