#!/bin/sh
# Fetch the OHIF Viewer's built files from npm and prepare them to be served under /ohif/ on the
# portal's own origin, so that OHIF's DICOMweb requests carry the portal's session like any page.
#
#   deploy/ohif/build.sh DEST [VERSION]
#
# OHIF's release is built for the root of a site; its files name that root in a handful of
# places (the page, the stylesheet's fonts, the manifest and webpack's public path), which are
# rewritten here and checked, so a release that names it elsewhere fails the build instead of
# half-loading. deploy/ohif/Dockerfile runs this; so does tests/test_ohif.py.
set -eu
DEST=${1:?usage: build.sh DEST [VERSION]}
VERSION=${2:-3.11.1}
BASE=/ohif/
HERE=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@ohif/app@$VERSION" >/dev/null && tar xzf ohif-app-"$VERSION".tgz)
dist="$work/package/dist"
[ -f "$dist/index.html" ] || { echo "build.sh: @ohif/app@$VERSION has no dist/index.html" >&2; exit 1; }

# The page: scripts, styles, icons and window.PUBLIC_URL.
sed -i -E -e "s#(src|href)=\"/#\1=\"$BASE#g" -e "s#window.PUBLIC_URL = '/'#window.PUBLIC_URL = '$BASE'#" \
  "$dist/index.html"
grep -q "window.PUBLIC_URL = '$BASE'" "$dist/index.html" \
  || { echo "build.sh: index.html does not set window.PUBLIC_URL as expected" >&2; exit 1; }
# Where webpack loads the other bundles, workers and WebAssembly from: the page's bundle and each
# web worker's (image decoding, histograms …) carry their own copy.
bundle=$(ls "$dist"/app.bundle.*.js)
grep -q '__webpack_require__.p = "/";' "$bundle" \
  || { echo "build.sh: webpack's public path not found in $bundle" >&2; exit 1; }
grep -l '__webpack_require__.p = "/";' "$dist"/*.js \
  | xargs sed -i "s#__webpack_require__.p = \"/\";#__webpack_require__.p = \"$BASE\";#"
# Fonts in the stylesheets and the icons of the manifest.
for file in "$dist"/*.css "$dist/manifest.json"; do
  sed -i -e "s#url(/#url($BASE#g" -e "s#\"src\": \"/#\"src\": \"$BASE#g" -e "s#\"start_url\": \"/\"#\"start_url\": \"$BASE\"#" "$file"
done
# No service worker: it would cache an old OHIF (and old app-config.js) across upgrades.
rm -f "$dist/sw.js" "$dist/sw.js.map"
cp "$HERE/app-config.js" "$dist/app-config.js"

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$dist" "$DEST"
echo "$VERSION" > "$DEST/OHIF_VERSION"
echo "OHIF $VERSION prepared for $BASE in $DEST"
