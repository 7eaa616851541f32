# Sourced by get-corpus.sh and get-heldout.sh: unpack_voice PACKAGE WORK
# downloads a Fish Fillets NG voice package (Debian) into WORK and unpacks it
# to WORK/x, or prints why not and exits 1. CALLER names the script in messages.
unpack_voice() {
    local pkg=$1 work=$2
    (cd "$work" && { apt-get download "$pkg" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download "$pkg" >/dev/null 2>&1; }; }) || {
        echo "$CALLER: 'apt-get download $pkg' failed (run 'apt-get update' first?)" >&2
        exit 1
    }
    dpkg -x "$work"/"$pkg"_*.deb "$work/x"
}
