#!/usr/bin/env bash
# Build a release of odin from the git checkout this script is in.
#
#   scripts/release.sh [options] VERSION [OUTDIR]
#
# VERSION is the git tag to release (v1.2.3); HEAD must be that tag's commit.
# OUTDIR (default dist/VERSION) receives, for each target:
#   odin-VERSION-linux-amd64   odin-load-VERSION-linux-amd64   (and arm64)
# static binaries (CGO_ENABLED=0, -trimpath, -ldflags '-s -w', VCS stamping on,
# so `odin version` names the commit), and SHA256SUMS over every file written.
# When a Docker engine with buildx is reachable, the image is built from the
# Dockerfile for the same platforms, labelled with VERSION and the revision,
# and exported as an OCI archive into OUTDIR (also in SHA256SUMS).
#
# Options:
#   --targets "linux/amd64 linux/arm64"  platforms to build (env ODIN_RELEASE_TARGETS;
#                                        this is the default)
#   --no-image                           do not build the image (env ODIN_RELEASE_IMAGE=0)
#   --allow-dirty                        build from a work tree with uncommitted changes
#                                        (the binaries then say "modified work tree")
#   --allow-untagged                     build HEAD although VERSION is not a tag of it
#   --image-name NAME                    image name (default odin-authz)
set -euo pipefail

die() { echo "release: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

targets=${ODIN_RELEASE_TARGETS:-linux/amd64 linux/arm64}
image=${ODIN_RELEASE_IMAGE:-1}
allow_dirty=0
allow_untagged=0
image_name=odin-authz
args=()
while (($#)); do
	case $1 in
	--targets) (($# >= 2)) || usage; targets=$2; shift 2 ;;
	--targets=*) targets=${1#*=}; shift ;;
	--no-image) image=0; shift ;;
	--allow-dirty) allow_dirty=1; shift ;;
	--allow-untagged) allow_untagged=1; shift ;;
	--image-name) (($# >= 2)) || usage; image_name=$2; shift 2 ;;
	--image-name=*) image_name=${1#*=}; shift ;;
	-h | --help) usage ;;
	-*) die "unknown option $1 (see $0 --help)" ;;
	*) args+=("$1"); shift ;;
	esac
done
((${#args[@]} >= 1 && ${#args[@]} <= 2)) || usage
version=${args[0]}
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] ||
	die "VERSION must be a semantic version tag such as v1.2.3, got \"$version\""

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) ||
	die "$(dirname "$0") is not in a git checkout: a release is built from one"
cd "$root"
outdir=${args[1]:-dist/$version}

# The commit: HEAD, which must be the tag, in a clean work tree.
revision=$(git rev-parse HEAD)
revision_time=$(git show -s --format=%cI HEAD)
if tagged=$(git rev-parse -q --verify "refs/tags/$version^{commit}"); then
	[[ $tagged == "$revision" ]] ||
		die "tag $version is commit $tagged but HEAD is $revision: check out the tag (git checkout $version)"
elif ((allow_untagged)); then
	echo "release: $version is not a tag; building HEAD $revision as $version (--allow-untagged)" >&2
else
	die "no tag $version: tag the commit first (git tag -a $version), or pass --allow-untagged"
fi
dirty=$(git status --porcelain --untracked-files=normal)
if [[ -n $dirty ]]; then
	if ((allow_dirty)); then
		echo "release: building from a work tree with uncommitted changes (--allow-dirty):" >&2
		echo "$dirty" >&2
	else
		echo "$dirty" >&2
		die "the work tree has uncommitted changes (above): commit or stash them, or pass --allow-dirty"
	fi
fi

# The go command stamps the revision (vcs.*) but not in a git worktree, whose
# .git is a file: link it in as well, which odin version reads when the
# stamp is missing (internal/buildinfo).
pkg=github.com/odin-scan/odin-authz/internal/buildinfo
ldflags="-s -w -X $pkg.revision=$revision -X $pkg.revisionTime=$revision_time"
[[ -z $dirty ]] || ldflags+=" -X $pkg.revisionModified=true"

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
files=()
for target in $targets; do
	os=${target%/*} arch=${target#*/}
	[[ $os == linux && ($arch == amd64 || $arch == arm64) ]] ||
		die "unsupported target $target (linux/amd64 and linux/arm64 are)"
	for cmd in odin odin-load; do
		name=$cmd-$version-$os-$arch
		echo "release: building $name" >&2
		# -buildvcs=true on the command line wins over a GOFLAGS that turns it off.
		CGO_ENABLED=0 GOOS=$os GOARCH=$arch \
			go build -buildvcs=true -trimpath -ldflags "$ldflags" -o "$outdir/$name" "./cmd/$cmd"
		go version -m "$outdir/$name" | grep -q "vcs.revision=$revision" ||
			echo "release: $name: the go command stamped no VCS information (a git worktree?); the revision is linked in instead" >&2
		files+=("$name")
	done
done

platforms=$(echo $targets | tr ' ' ',')
if ((!image)); then
	echo "release: image skipped (--no-image)" >&2
elif ! docker buildx version >/dev/null 2>&1; then
	echo "release: image SKIPPED: docker buildx is not installed; binaries and checksums are complete." >&2
	echo "release: build it elsewhere with: docker buildx build --platform $platforms --build-arg VERSION=$version --build-arg VCS_REVISION=$revision --build-arg VCS_TIME=$revision_time -t $image_name:$version ." >&2
elif ! docker info >/dev/null 2>&1; then
	echo "release: image SKIPPED: no Docker engine is reachable (docker info fails); binaries and checksums are complete." >&2
	echo "release: build it elsewhere with: docker buildx build --platform $platforms --build-arg VERSION=$version --build-arg VCS_REVISION=$revision --build-arg VCS_TIME=$revision_time -t $image_name:$version ." >&2
else
	archive=$image_name-$version.oci.tar
	echo "release: building image $image_name:$version for $platforms into $archive" >&2
	# A multi-platform OCI archive needs a buildx builder with the
	# docker-container driver (docker buildx create --use) or the containerd
	# image store; push with: docker buildx build ... --push -t REGISTRY/NAME:VERSION .
	docker buildx build --platform "$platforms" \
		--build-arg VERSION="$version" --build-arg VCS_REVISION="$revision" --build-arg VCS_TIME="$revision_time" \
		-t "$image_name:$version" --output "type=oci,dest=$outdir/$archive" .
	files+=("$archive")
fi

(cd "$outdir" && sha256sum -- "${files[@]}" >SHA256SUMS)
echo "release: $version ($revision) in $outdir:" >&2
(cd "$outdir" && cat SHA256SUMS) >&2
