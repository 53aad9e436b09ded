#!/usr/bin/env bash
# fetch_electro128_music.sh TARGET_DIR
#
# The training music of the shipped network electro128 (NOTICE): the 20 BSD-2-Clause tracks by
# Kenta Cho that audio_ext/decoder/models/fetch_training_music.sh fetches, plus three permissively licensed
# tracks from three more Debian 12 "bookworm" (main) packages:
#   dv02_noiz2sa_stg4.ogg     noiz2sa-data 0.51a-13      BSD-2-Clause, Kenta Cho
#   dv04_funnyboat_trip.ogg   funnyboat 1.5-11           Expat, JDruid (Joona Karjalainen)
#   dv08_gunroar_gr3.ogg      gunroar-data 0.15.dfsg1-10 BSD-2-Clause, Kenta Cho
# Same method: apt-get download of the pinned .deb files (nothing is installed), extraction of
# only the music and the copyright file, sha256 check of every file (a mismatch aborts), files
# renamed into place, licences in TARGET/licenses/, rows appended to TARGET/manifest.csv.
# Safe to rerun: a TARGET whose files all check out is left as it is.
set -euo pipefail

TARGET=${1:?usage: fetch_electro128_music.sh TARGET_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# output name|package|version|path in package|sha256|licence|artist|copyright line (debian/copyright)|title
EXTRA=$(cat <<'TABLE'
dv02_noiz2sa_stg4.ogg|noiz2sa-data|0.51a-13|usr/share/games/noiz2sa/sounds/stg4.ogg|55cf7f9d38271fdcc9cbd22793b98cb02f6e722a683136e3d649fd6f719dd58f|BSD-2-Clause|Kenta Cho|Copyright 2002 Kenta Cho|noiz2sa stage music 4
dv04_funnyboat_trip.ogg|funnyboat|1.5-11|usr/share/games/funnyboat/data/JDruid-Trip_on_the_Funny_Boat.ogg|1db157e12fa37b54a5add98a9f2ad6c906806e898fac53c29a96cd48a09c9278|Expat|JDruid (Joona Karjalainen)|Copyright 2006 Joona Karjalainen (JDruid), Pekka Kujansuu, Olli Etuaho|Trip on the Funny Boat
dv08_gunroar_gr3.ogg|gunroar-data|0.15.dfsg1-10|usr/share/games/gunroar/sounds/musics/gr3.ogg|7fd423cb41e750fdf8377be018c10980360193ddd445da64f7ca8b9c80f019a4|BSD-2-Clause|Kenta Cho|Copyright 2005 Kenta Cho|Gunroar music 3
TABLE
)

log() { printf '[fetch_electro128_music] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

all_present() {   # every expected file (the 20 of the manifest and the 3 above) with its sha256
  [ -f "$TARGET/manifest.csv" ] || return 1
  [ "$(grep -c '\.ogg,' "$TARGET/manifest.csv")" -ge 23 ] || return 1
  tail -n +2 "$TARGET/manifest.csv" | while IFS=, read -r name _ _ _ sha _; do
    [ -f "$TARGET/$name" ] && [ "$(sha256sum "$TARGET/$name" | cut -c1-64)" = "$sha" ] || exit 1
  done
}
if all_present; then log "all 23 tracks already in $TARGET"; exit 0; fi

bash "$HERE/../audio_ext/decoder/models/fetch_training_music.sh" "$TARGET"

for t in apt-get dpkg-deb tar sha256sum; do command -v "$t" >/dev/null 2>&1 || die "missing required tool: $t"; done
WORKDIR=$(mktemp -d)
trap 'rm -rf "$WORKDIR"' EXIT
specs=()
while IFS='|' read -r _ pkg ver _; do specs+=("$pkg=$ver"); done <<<"$EXTRA"
( cd "$WORKDIR" && apt-get download -q "${specs[@]}" ) || \
  die "apt-get download failed (run 'apt-get update'; the pinned versions are Debian 12 bookworm's)"

rows=""
while IFS='|' read -r name pkg ver path sha lic artist copy title; do
  deb=$(ls "$WORKDIR/${pkg}_${ver}_"*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || die "$pkg $ver: .deb not found"
  mkdir -p "$WORKDIR/x/$pkg"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$WORKDIR/x/$pkg" "./usr/share/doc/$pkg/copyright" "./$path"
  got=$(sha256sum "$WORKDIR/x/$pkg/$path" | cut -c1-64)
  [ "$got" = "$sha" ] || die "checksum mismatch for $pkg:$path (expected $sha, got $got)"
  cp "$WORKDIR/x/$pkg/usr/share/doc/$pkg/copyright" "$TARGET/licenses/$pkg.copyright"
  cp "$WORKDIR/x/$pkg/$path" "$TARGET/$name.tmp" && mv "$TARGET/$name.tmp" "$TARGET/$name"
  rows+="$name,$pkg,$ver,\"$path\",$sha,$lic,\"$copy\",$artist,\"$title\""$'\n'
done <<<"$EXTRA"
printf '%s' "$rows" >> "$TARGET/manifest.csv"
log "added 3 tracks to $TARGET (23 in all)"
