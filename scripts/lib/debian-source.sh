# Helpers for the scripts that build a dependency from Debian's own source
# package (scripts/build-lean-curl, scripts/build-lean-libs): nothing is
# vendored, the source comes from the system's apt sources at run time, with
# Debian's patches applied. Sourced, not run; the caller sets -euo pipefail.
#
#   deb_src_enable PKG            make `apt-cache showsrc PKG` answer
#   deb_install_missing PKG...    apt-get install the packages not installed yet
#   deb_fetch_source PKG WANT SRCROOT [PREPARE] [ORIG_OK]
#       unpack source package PKG (version WANT if apt has it, else the
#       newest) under SRCROOT; sets deb_version and deb_srcdir. PREPARE, a
#       function name, runs in the fresh tree (e.g. to revert a patch).
#       ORIG_OK=orig-ok accepts the upstream tarball alone, checked against
#       the .dsc, when the mirror cannot serve Debian's packaging tarball.

deb_sudo=""
[ "$(id -u)" -eq 0 ] || deb_sudo="sudo"
deb_srclist=/etc/apt/sources.list.d/tgllm-deb-src.sources

# Prints "URI|suites|components|signed-by" for every enabled binary ("deb")
# source whose suite is this release (codename, -updates, -security).
deb_system_sources() {
	local codename=$1 f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -e 's/#.*//' "$f" | awk -v c="$codename" '
			$1 == "deb" {
				opts = ""; i = 2
				if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
				uri = $i; suite = $(i + 1); comps = ""
				for (j = i + 2; j <= NF; j++) comps = comps (comps ? " " : "") $j
				sb = ""; if (match(opts, /signed-by=[^] ]*/)) sb = substr(opts, RSTART + 10, RLENGTH - 10)
				if (suite ~ "^" c "(-updates|-security)?$") print uri "|" suite "|" comps "|" sb
			}'
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && [ "$f" != "$deb_srclist" ] || continue
		awk -v c="$codename" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && enabled != "no") {
					n = split(suites, s, " "); keep = ""
					for (k = 1; k <= n; k++) if (s[k] ~ "^" c "(-updates|-security)?$") keep = keep (keep ? " " : "") s[k]
					if (keep != "") { m = split(uris, u, " "); for (k = 1; k <= m; k++) print u[k] "|" keep "|" comps "|" sb }
				}
				types = uris = suites = comps = sb = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{ key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); val = $0
			  if (key == "types") types = val; else if (key == "uris") uris = val
			  else if (key == "suites") suites = val; else if (key == "components") comps = val
			  else if (key == "signed-by") sb = val; else if (key == "enabled") enabled = tolower(val) }
			END { flush() }' "$f"
	done
}

# If apt knows no source for PKG, writes deb-src entries with the same URIs,
# suites, components and Signed-By as the system's own Debian entries (no
# host name comes from this repository), then runs apt-get update.
deb_src_enable() {
	local pkg=$1 showsrc entries codename
	# (Captured first: with pipefail, grep -q closing the pipe early would fail it.)
	showsrc=$(apt-cache showsrc "$pkg" 2>/dev/null || true)
	grep -q "^Package: $pkg\$" <<<"$showsrc" && return 0
	. /etc/os-release
	codename=${VERSION_CODENAME:?cannot tell the Debian codename from /etc/os-release}
	entries=$(deb_system_sources "$codename" | sort -u)
	if [ -z "$entries" ]; then
		echo "$(basename "$0"): no enabled Debian '$codename' source in /etc/apt; cannot add deb-src" >&2
		exit 1
	fi
	echo "$(basename "$0"): adding deb-src entries to $deb_srclist"
	{
		echo "# Added by tgllm scripts/$(basename "$0"): source entries mirroring the"
		echo "# system's binary entries, for 'apt-get source'."
		while IFS='|' read -r uri suites comps sb; do
			echo
			echo "Types: deb-src"
			echo "URIs: $uri"
			echo "Suites: $suites"
			echo "Components: $comps"
			[ -z "$sb" ] || echo "Signed-By: $sb"
		done <<<"$entries"
	} | $deb_sudo tee "$deb_srclist" >/dev/null
	# apt waits for the dpkg lock instead of failing when another apt runs.
	$deb_sudo apt-get -o DPkg::Lock::Timeout=600 update -q
}

deb_install_missing() {
	local p missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	echo "$(basename "$0"): installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive $deb_sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q \
		--no-install-recommends "${missing[@]}"
}

# Unpacks the upstream tarball named in the .dsc after checking its SHA-256
# there; for a mirror that serves the .dsc and the .orig but lost the
# packaging tarball. Prints the directory it made.
deb_unpack_orig() {
	local pkg=$1 version=$2 dest=$3 upstream=${2#*:} dsc orig sum top
	upstream=${upstream%-*}
	dsc=$(compgen -G "${pkg}_${upstream}-*.dsc" | awk 'NR == 1')
	orig=$(compgen -G "${pkg}_${upstream}.orig.tar.*" | grep -v '\.asc$' | awk 'NR == 1')
	[ -n "$dsc" ] && [ -n "$orig" ] || return 1
	sum=$(awk -v f="$orig" '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on && $3 == f { print $1 }' "$dsc")
	[ -n "$sum" ] && [ "$(sha256sum "$orig" | cut -d' ' -f1)" = "$sum" ] || return 1
	top=$(tar tf "$orig" | awk -F/ 'NR == 1 { print $1 }')
	rm -rf "$top" "$dest"
	tar xf "$orig"
	mv "$top" "$dest"
}

deb_fetch_source() {
	local pkg=$1 want=$2 srcroot=$3 prepare=${4:-} orig_ok=${5:-} showsrc upstream
	deb_src_enable "$pkg"
	mkdir -p "$srcroot"
	showsrc=$(apt-cache showsrc "$pkg")
	if [ -n "$want" ] && grep -qxF "Version: $want" <<<"$showsrc"; then
		deb_version=$want
	else
		deb_version=$(sed -n 's/^Version: //p' <<<"$showsrc" | sort -V | tail -n1)
		[ -z "$want" ] || echo "$(basename "$0"): installed $pkg $want has no source entry; using $deb_version"
	fi
	upstream=${deb_version#*:}
	upstream=${upstream%-*}
	deb_srcdir=$srcroot/$pkg-$upstream
	if [ -f "$deb_srcdir/.tgllm-version" ] && [ "$(cat "$deb_srcdir/.tgllm-version")" = "$deb_version" ]; then
		return 0
	fi
	(
		cd "$srcroot"
		rm -rf "$deb_srcdir" "$srcroot/${pkg}_"*
		echo "$(basename "$0"): apt-get source $pkg=$deb_version"
		if ! apt-get source -q "$pkg=$deb_version"; then
			if [ "$orig_ok" = orig-ok ] && deb_unpack_orig "$pkg" "$deb_version" "$deb_srcdir"; then
				echo "$(basename "$0"): warning: Debian's packaging of $pkg $deb_version could not be fetched;" \
					"building the upstream tarball that Debian ships (SHA-256 checked against the .dsc)" \
					"without Debian's patches" >&2
			else
				echo "$(basename "$0"): apt-get source $pkg=$deb_version failed" >&2
				exit 1
			fi
		fi
		cd "$deb_srcdir"
		[ -z "$prepare" ] || "$prepare"
		echo "$deb_version" >.tgllm-version
	)
}
