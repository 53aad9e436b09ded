#!/usr/bin/env bash
# fetch_training_music.sh TARGET_DIR
#
# Rebuilds the extra training music of the shipped decoder model
# (audio_ext/decoder/models/frame_interp_r1024_h1024.pt, see NOTICE and docs/audio.md):
# 20 tracks of electronic game music by Kenta Cho, BSD-2-Clause, from five
# Debian 12 "bookworm" (main) packages. Nothing is installed:
#   1. apt-get download of the pinned .deb files into a work folder
#   2. extraction of only the music and the copyright file (dpkg-deb --fsys-tarfile | tar)
#   3. sha256 check of every extracted file against the table below
#   4. TARGET/<game>_<file>.ogg (as shipped, 44.1 kHz mono Ogg Vorbis),
#      TARGET/licenses/<package>.copyright and TARGET/manifest.csv
# The model was also trained on three devset tracks (dv02, dv04, dv08;
# the team's development set, not distributed here) and four synthetic loops; dv07 was its
# validation track. Train with:
#   python -m audio_ext train-decoder --source DIR_WITH_ALL_OF_THEM ...  (docs/audio.md)
#
# Environment:
#   STRICT=1     abort on a checksum mismatch (0 = warn only)
#   WORKDIR=...  where to put the .deb files (default: mktemp -d, removed at the end)
set -euo pipefail

TARGET=${1:?usage: fetch_training_music.sh TARGET_DIR}
STRICT=${STRICT:-1}

# package|version|copyright line (the package's debian/copyright)
PACKAGES=$(cat <<'TABLE'
parsec47-data|0.2.dfsg1-9|Copyright 2003 Kenta Cho
rrootage-data|0.23a-13|Copyright: Kenta Cho, 2003.
titanion-data|0.3.dfsg1-8|Copyright 2006 Kenta Cho
torus-trooper-data|0.22.dfsg1-13|Copyright 2004 Kenta Cho
tumiki-fighters-data|0.2.dfsg1-10|Copyright 2004 Kenta Cho
TABLE
)

# output name|package|path in package|sha256|title
TRACKS=$(cat <<'TABLE'
parsec47_ptn0.ogg|parsec47-data|usr/share/games/parsec47/sounds/ptn0.ogg|b600cfecdeb48a42a399be56feb5dedf4606fa3adac77e53a2a641065b2f9609|Parsec47 music ptn0
parsec47_ptn1.ogg|parsec47-data|usr/share/games/parsec47/sounds/ptn1.ogg|87ca0b4d8e9905fdb94270ff794cdb37a85775d9ed8981a0b716d60b722f7fa9|Parsec47 music ptn1
parsec47_ptn2.ogg|parsec47-data|usr/share/games/parsec47/sounds/ptn2.ogg|f10a04bac57f034971689f0870e6e133285e62a8ec169c352d8b8e2da5de47a6|Parsec47 music ptn2
parsec47_ptn3.ogg|parsec47-data|usr/share/games/parsec47/sounds/ptn3.ogg|84a824c265cfd9ed8f5ad37dca64678f845f5a2c5007e65b0c16cdfbac4cf120|Parsec47 music ptn3
rrootage_stg_a.ogg|rrootage-data|usr/share/games/rrootage/sounds/stg_a.ogg|8971465a11cdacfe0646693f988e474b797e93ec61b850fa86088090137e06e5|rRootage stage music A
rrootage_stg_b.ogg|rrootage-data|usr/share/games/rrootage/sounds/stg_b.ogg|463f4130cfedff543cc55d3f751d6634677fb284d86189e401093ade7f478da5|rRootage stage music B
rrootage_stg_c.ogg|rrootage-data|usr/share/games/rrootage/sounds/stg_c.ogg|4673da123acda02090097e4327abdf2349aee550fb6d091a841728d8cc31b6ae|rRootage stage music C
titanion_ttn1.ogg|titanion-data|usr/share/games/titanion/sounds/musics/ttn1.ogg|21033d6202c3632d9d302008992636d15dcb82956f29626b269bb498cd89761e|Titanion music 1
titanion_ttn2.ogg|titanion-data|usr/share/games/titanion/sounds/musics/ttn2.ogg|6c87c70de9d6a5b9e56de6df80d654d89e1c04f847836098ef0316ddb0c0123f|Titanion music 2
titanion_ttn3.ogg|titanion-data|usr/share/games/titanion/sounds/musics/ttn3.ogg|5edecd2a7ec33cf4605899e84ec06e7296141db13f703c98b00d2041e120bf03|Titanion music 3
torus-trooper_tt1.ogg|torus-trooper-data|usr/share/games/torus-trooper/sounds/musics/tt1.ogg|87449b552405377f7f275d8996e996fffdb60ecc8c41d15646eebce1db0ac745|Torus Trooper music 1
torus-trooper_tt2.ogg|torus-trooper-data|usr/share/games/torus-trooper/sounds/musics/tt2.ogg|c52d8b8ec29a11962b556b6dabdec5a510bdd6e5d16c33ff00b0925effcfaaf8|Torus Trooper music 2
torus-trooper_tt3.ogg|torus-trooper-data|usr/share/games/torus-trooper/sounds/musics/tt3.ogg|0946fdb7fd42decad30d661b458ae46b0cd772d324ed9dde3d0e784b21281cf2|Torus Trooper music 3
torus-trooper_tt4.ogg|torus-trooper-data|usr/share/games/torus-trooper/sounds/musics/tt4.ogg|e1ad2ca1b0fd3eb84bd92c2fc9cbe67787266fd4763b77c49bf012d79f1a7d81|Torus Trooper music 4
tumiki-fighters_battle_over_the_junk_city.ogg|tumiki-fighters-data|usr/share/games/tumiki-fighters/sounds/battle_over_the_junk_city.ogg|f704c5ddd43f5bce2c3c3f0160c55cf6d683d71df29656cf15d8296f1bf10fee|Battle over the Junk City
tumiki-fighters_here_comes_a_gigantic_toy.ogg|tumiki-fighters-data|usr/share/games/tumiki-fighters/sounds/here_comes_a_gigantic_toy.ogg|7d21ab2ce3bb75cfb2f545b7f6bb3eb6c3cb0a85aa92eb6ef33edcf41fd8d246|Here Comes a Gigantic Toy
tumiki-fighters_just_over_the_horizon.ogg|tumiki-fighters-data|usr/share/games/tumiki-fighters/sounds/just_over_the_horizon.ogg|2efaadd9904c98519fb00ac0c92577315e38af23e9670c5a63089bf7e77405cc|Just over the Horizon
tumiki-fighters_panic_on_meadow.ogg|tumiki-fighters-data|usr/share/games/tumiki-fighters/sounds/panic_on_meadow.ogg|31a2cd729943474b3eb75969b00e04f0649f9640520e5faf048e34e646914611|Panic on Meadow
tumiki-fighters_return_to_home.ogg|tumiki-fighters-data|usr/share/games/tumiki-fighters/sounds/return_to_home.ogg|6a4f36f00d0dd473d6a5a633428fe43ad7c81a9cc800d6f3d43a9729f33cbede|Return to Home
tumiki-fighters_we_are_tumiki_fighters.ogg|tumiki-fighters-data|usr/share/games/tumiki-fighters/sounds/we_are_tumiki_fighters.ogg|9cd7f8faa195de5ccc395eebb8cac873e8eeb3c8697565134a04e8e03fedc47a|We Are Tumiki Fighters
TABLE
)

log() { printf '[fetch_training_music] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in apt-get dpkg-deb tar sha256sum; do
  command -v "$t" >/dev/null 2>&1 || die "missing required tool: $t"
done

if [ -n "${WORKDIR:-}" ]; then
  mkdir -p "$WORKDIR"; CLEANUP=0
else
  WORKDIR=$(mktemp -d); CLEANUP=1
fi
trap 'if [ "$CLEANUP" = 1 ]; then rm -rf "$WORKDIR"; fi' EXIT
mkdir -p "$TARGET/licenses"

# --- download -----------------------------------------------------------------
specs=()
while IFS='|' read -r pkg ver _; do specs+=("$pkg=$ver"); done <<<"$PACKAGES"
if ! ( cd "$WORKDIR" && apt-get download -q "${specs[@]}" ); then
  die "apt-get download failed (run 'apt-get update'; the pinned versions are Debian 12 bookworm's)"
fi

# --- extract, check, copy ---------------------------------------------------------
while IFS='|' read -r pkg ver _; do
  deb=$(ls "$WORKDIR/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || die "$pkg $ver: .deb not found in $WORKDIR"
  mkdir -p "$WORKDIR/x/$pkg"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$WORKDIR/x/$pkg" ./usr/share/doc/"$pkg"/copyright ./usr/share/games
  cp "$WORKDIR/x/$pkg/usr/share/doc/$pkg/copyright" "$TARGET/licenses/$pkg.copyright"
done <<<"$PACKAGES"

tmp_manifest="$TARGET/manifest.csv.tmp"
echo "file,package,version,path,sha256,license,copyright,artist,title" > "$tmp_manifest"
bad=0
while IFS='|' read -r name pkg path sha title; do
  src="$WORKDIR/x/$pkg/$path"
  [ -f "$src" ] || die "$pkg: $path missing from the package"
  got=$(sha256sum "$src" | cut -c1-64)
  if [ "$got" != "$sha" ]; then
    log "checksum mismatch for $pkg:$path (expected $sha, got $got)"
    bad=1
    [ "$STRICT" = 1 ] && die "aborting (STRICT=1)"
  fi
  cp "$src" "$TARGET/$name.tmp" && mv "$TARGET/$name.tmp" "$TARGET/$name"
  ver=$(awk -F'|' -v p="$pkg" '$1 == p {print $2}' <<<"$PACKAGES")
  copy=$(awk -F'|' -v p="$pkg" '$1 == p {print $3}' <<<"$PACKAGES")
  echo "$name,$pkg,$ver,\"$path\",$got,BSD-2-Clause,\"$copy\",Kenta Cho,\"$title\"" >> "$tmp_manifest"
done <<<"$TRACKS"
mv "$tmp_manifest" "$TARGET/manifest.csv"
log "wrote $(wc -l <<<"$TRACKS") tracks, licences and manifest.csv to $TARGET$([ $bad = 1 ] && echo ' (WITH CHECKSUM WARNINGS)')"
