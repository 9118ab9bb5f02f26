#!/usr/bin/env bash
# Install the OS packages dawnet needs (handwriting fonts and English text for the synthetic OCR data; chromium
# for the inspector's browser test) with apt-get where it is available; elsewhere, say what to install.
# Does nothing when all are present.
set -u
packages="fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-sjfonts fonts-kristi fonts-dancingscript
fonts-kaushanscript fonts-rufscript fonts-ecolier-court fonts-comic-neue fonts-humor-sans fortunes fortunes-min
chromium"
if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "dawnet set-up: apt-get is not available here. Install these Debian/Ubuntu packages' fonts another way"
  echo "  ($packages)"
  echo "or point dawnet at a folder of handwriting .ttf/.otf fonts with --fonts DIR; the inspector's browser"
  echo "test needs a chromium at /usr/bin/chromium and is skipped without one."
  exit 0
fi
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "dawnet set-up: missing OS packages:$missing"
  echo "  install them with: sudo apt-get update && sudo apt-get install -y$missing"
  exit 0
fi
echo "dawnet set-up: installing$missing"
$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
