#!/usr/bin/env bash
# bind.sh OUT [host|android|ios]
#
# android, ios: gomobile bind for machines with the Android NDK
# (ANDROID_HOME, ANDROID_NDK_HOME) or Xcode, giving OUT/causality.aar or
# sdk/ios/Causality.xcframework, where sdk/ios/Package.swift expects it
# (make mobile-android, make mobile-ios).
#
# host (default): what can be proven of the gomobile bindings on a Linux machine
# without the Android NDK or Xcode (make mobile runs it).
#
#  1. gobind -lang=go,java and -lang=go,objc on causality.dev/sdk/mobile, in a
#     throwaway module (OUT/mod) that adds golang.org/x/mobile at the version
#     pinned in tools/go.mod, so the SDK's own go.mod stays free of it. Any
#     "skipped" line (an exported API gobind could not bind) fails the build.
#  2. The gobind Go glue built for linux/amd64 as a JNI library,
#     OUT/lib/libgojni.so (the Android-only bits stubbed: android/log.h
#     writes to stderr, an empty liblog).
#  3. The generated Java (with a one-class android.content.Context stub), the
#     Java wrapper of sdk/android and its host-JVM test compiled by javac
#     into OUT/classes.
#
# Needs: go, gcc, a JDK 17+ (javac, include/jni.h), gobind in PATH.
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
target=${2:-host}
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v gobind >/dev/null || { echo "bind.sh: gobind not in PATH (make mobile installs it into .bin/)" >&2; exit 1; }
export GOWORK=off GOFLAGS=-mod=mod

mobile_version=$(cd "$root/tools" && go list -m -f '{{.Version}}' golang.org/x/mobile)
rm -rf "$out/mod" "$out/java" "$out/objc" "$out/classes" "$out/lib" "$out/stub"
mkdir -p "$out/mod" "$out/lib" "$out/stub/android" "$out/classes"

# 1. gobind, in a module that sees the SDK (by replace) and x/mobile.
cat >"$out/mod/go.mod" <<EOF
module causality.dev/mobilebind

go 1.26.0

require (
	causality.dev/sdk v0.0.0
	causality.dev/api v0.0.0
	golang.org/x/mobile $mobile_version
)

replace (
	causality.dev/sdk => $root/sdk
	causality.dev/api => $root/api
)
EOF
cat >"$out/mod/deps.go" <<'EOF'
package mobilebind

import (
	_ "causality.dev/sdk/mobile"
	_ "golang.org/x/mobile/bind"
	_ "golang.org/x/mobile/bind/seq"
)
EOF
(cd "$out/mod" && go mod tidy)

case $target in
android)
	cd "$out/mod" && exec gomobile bind -target=android -androidapi 24 -javapkg=dev.causality -o "$out/causality.aar" causality.dev/sdk/mobile
	;;
ios)
	cd "$out/mod" && exec gomobile bind -target=ios,iossimulator -prefix=CY -o "$root/sdk/ios/Causality.xcframework" causality.dev/sdk/mobile
	;;
host) ;;
*) echo "bind.sh: target $target: want host, android or ios" >&2; exit 1 ;;
esac
javac=${JAVAC:-javac}
jdk=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v "$javac")")")")}
[[ -f $jdk/include/jni.h ]] || { echo "bind.sh: no jni.h under $jdk/include: set JAVA_HOME to a JDK" >&2; exit 1; }

bind() { # lang outdir
	local log="$out/gobind-$1.log"
	(cd "$out/mod" && gobind -lang="go,$1" -javapkg=dev.causality -prefix=CY -outdir="$2" causality.dev/sdk/mobile) >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
	# gobind exits 0 and notes what it could not bind as "// skipped ..."
	# comments in the generated code.
	if grep -rni skipped "$log" "$2" >&2; then
		echo "bind.sh: gobind -lang=go,$1 skipped exported API of sdk/mobile (above): use gobind-legal types" >&2
		exit 1
	fi
}
bind java "$out/java"
bind objc "$out/objc"
ls "$out/objc/src/gobind/"*.h >/dev/null # the ObjC headers were generated

# 2. The JNI library. Files named *_android.* only build for GOOS=android:
# rename them for linux; __GOBIND_ANDROID__ selects the JNI half of the
# headers; the JDK's jni.h differs from the NDK's in one pointer type.
glue="$out/mod/gobind"
rm -rf "$glue" && cp -r "$out/java/src/gobind" "$glue"
for f in "$glue"/*_android.c "$glue"/*_android.go; do
	[[ -e $f ]] && mv "$f" "${f/_android./_jni.}"
done
cat >"$out/stub/android/log.h" <<'EOF'
/* Host stand-in for the NDK's android/log.h: log to stderr. */
#ifndef CAUSALITY_STUB_ANDROID_LOG_H
#define CAUSALITY_STUB_ANDROID_LOG_H
#include <stdarg.h>
#include <stdio.h>
enum { ANDROID_LOG_UNKNOWN, ANDROID_LOG_DEFAULT, ANDROID_LOG_VERBOSE, ANDROID_LOG_DEBUG,
       ANDROID_LOG_INFO, ANDROID_LOG_WARN, ANDROID_LOG_ERROR, ANDROID_LOG_FATAL, ANDROID_LOG_SILENT };
static inline int __android_log_print(int prio, const char *tag, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%d %s: ", prio, tag);
	int n = vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return n;
}
static inline int __android_log_write(int prio, const char *tag, const char *text) {
	return fprintf(stderr, "%d %s: %s\n", prio, tag, text);
}
#endif
EOF
ar rcs "$out/stub/liblog.a" # -llog: nothing left to link
(cd "$out/mod" && CGO_ENABLED=1 GOOS=linux GOARCH=amd64 \
	CGO_CFLAGS="-D__GOBIND_ANDROID__ -Wno-incompatible-pointer-types -I$jdk/include -I$jdk/include/linux -I$out/stub" CGO_LDFLAGS="-L$out/stub" \
	go build -trimpath -buildmode=c-shared -ldflags="-s -w" -o "$out/lib/libgojni.so" ./gobind)
rm -f "$out/lib/libgojni.h"

# 3. javac: the generated classes, the wrapper and its test.
mkdir -p "$out/stub/java/android/content"
echo 'package android.content; public class Context {}' >"$out/stub/java/android/content/Context.java"
find "$out/java/java" "$out/stub/java" -name '*.java' >"$out/generated.txt"
"$javac" --release 17 -nowarn -d "$out/classes" @"$out/generated.txt"
find "$root/sdk/android/src" -name '*.java' >"$out/wrapper.txt"
"$javac" --release 17 -Xlint:all -Werror -cp "$out/classes" -d "$out/classes" @"$out/wrapper.txt"
echo "bind.sh: $out/lib/libgojni.so ($(stat -c %s "$out/lib/libgojni.so") bytes), classes in $out/classes, ObjC in $out/objc"
