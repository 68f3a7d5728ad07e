#!/usr/bin/env bats
# dlopen caching: the shim serves dlopen from a handle cache, yet every
# program must see what it sees without it. Each scenario of
# tests/helpers/dltest.c runs without the shim and under both builds of it
# (-O2: build/libfdguard.so; -O0: build-O0/libfdguard.so, made here if
# needed) in keep (the default) and cache modes and with FDGUARD=off, and
# the result lines must be the same. Test plugins and callers (tests/dlplug/) are compiled here,
# with the DT_RPATH / DT_RUNPATH each case needs.
#
# Under ASan and TSan the sanitizer runtime intercepts dlopen and calls the
# loader from its own frame, with or without the shim: there only the
# comparisons run, not the checks of what the loader found.

bats_require_minimum_version 1.5.0

load lib

setup_file() {
	local S=$FDG_ROOT/tests/dlplug
	export D=$BATS_FILE_TMPDIR/dl
	export FDG_LIB_O0=${FDG_BUILD}-O0/libfdguard.so
	# A build that believes a shadow stack is active and traps where a real
	# one would (shim/dlentry.c, shim/dlcaller.c: FDG_TEST_SHSTK).
	export FDG_LIB_SHSTK=$FDG_BUILD/shstktest/libfdguard.so
	# Always asked: make is quick when the builds are current, and a stale
	# one would test old code.
	make -s -C "$FDG_ROOT" OPT=-O0 ${FDG_SANITIZE:+SANITIZE=$FDG_SANITIZE} all >&2 || return 1
	make -s -C "$FDG_ROOT" BUILD="$FDG_BUILD/shstktest" EXTRA_CFLAGS=-DFDG_TEST_SHSTK \
		${FDG_SANITIZE:+SANITIZE=$FDG_SANITIZE} all >&2 || return 1

	# build OUT SOURCE FLAGS...: $D/OUT from tests/dlplug/SOURCE.c, in the
	# background (the pids collect in jobs; setup_file waits for each).
	local jobs=() job out src flags
	build() {
		mkdir -p "$(dirname "$D/$1")"
		gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$D/$1" "$S/$2.c" "${@:3}" &
		jobs+=($!)
	}
	# libplug.so in five places, each with its own value; the other plugins.
	while read -r out src flags; do
		flags=${flags%%#*}
		# shellcheck disable=SC2086 # flags are words
		build "$out" "$src" $flags
	done <<-'EOF'
		a/libplug.so        plug -DVALUE=1 # a caller's DT_RPATH
		b/libplug.so        plug -DVALUE=2 # LD_LIBRARY_PATH
		rc/lib/libplug.so   plug -DVALUE=3 # $ORIGIN/lib of the RUNPATH caller
		rc/plugins/x.so     plug -DVALUE=4 # $ORIGIN/plugins of the RUNPATH caller
		bin/lib/libplug.so  plug -DVALUE=5 # $ORIGIN/lib of the RUNPATH main program
		bin/plugins/x.so    plug -DVALUE=6 # $ORIGIN/plugins of the main programs
		only/libonly.so     plug -DVALUE=7 # only oc/libcaller.so's RUNPATH finds it
		big/libbig.so       plug -DVALUE=8 -DBIG=67108864 # a 64 MiB zero-fill mapping
		big/librodata.so    plug -DVALUE=9 -DRODATA=67108864 # 64 MiB of constants in the file
		tls/a.so            plug -DVALUE=41 -DTLS=1200 -DTLS_IE # static TLS: two do not fit at once
		tls/b.so            plug -DVALUE=42 -DTLS=1200 -DTLS_IE
		tls/desc.so         plug -DVALUE=43 -DTLS=400 -mtls-dialect=gnu2 # static TLS if there is room
		tls/big.so          plug -DVALUE=44 -DTLS=1500 -DTLS_IE # does not fit beside desc.so
		p/plug.so           plug -DVALUE=10
		p/other.so          plug -DVALUE=11
		reload/v1.so        plug -DVALUE=1
		reload/v2.so        plug -DVALUE=2
		reload/v3.so        plug -DVALUE=3
		over/v1.so          plug -DVALUE=1
		over/v2.so          plug -DVALUE=2 -O0 # another code layout: v1's addresses are garbage in it
		over/dep-v2.so      plug -DVALUE=32 -O0 -Wl,-soname,libdep.so
		bt/bt.so            bt
		ctorerr/plug.so     plug -DVALUE=12 -DCTOR_DLOPEN="libfdg-nothere-ctor.so"
	EOF
	# Libraries that call dlopen themselves, each with its own search path.
	build rc/libcaller.so caller -Wl,--enable-new-dtags,-rpath,'$ORIGIN/lib'
	build fp/libcaller.so caller -fno-omit-frame-pointer # its rets follow `pop %rbp`
	build rp/libcaller.so caller -Wl,--disable-new-dtags,-rpath,"$D/a"
	build oc/libcaller.so caller -Wl,--enable-new-dtags,-rpath,"$D/only"
	# Plugins (hosts) whose dependency libcaller.so calls dlopen: in ha/ and
	# hb/, identical but for the libplug.so their $ORIGIN/lib holds.
	local h
	for h in ha:21 hb:22; do
		(
			d=$D/${h%:*}
			build "${h%:*}/lib/libplug.so" plug -DVALUE="${h#*:}"
			build "${h%:*}/libcaller.so" caller -Wl,--enable-new-dtags,-rpath,'$ORIGIN/lib'
			wait "${jobs[@]:(-2)}"
			gcc -shared -fPIC -O2 -o "$d/host.so" "$S/plug.c" -L"$d" -Wl,--no-as-needed -lcaller \
				-Wl,--enable-new-dtags,-rpath,'$ORIGIN'
		) &
		jobs+=($!)
	done
	# A plugin with a dependency of its own (over/libdep.so, found through
	# its RUNPATH), which comes and goes with it.
	(
		build over/libdep.so plug -DVALUE=31 -Wl,-soname,libdep.so
		wait "${jobs[-1]}"
		gcc -shared -fPIC -O2 -o "$D/over/host.so" "$S/plug.c" -DVALUE=30 -L"$D/over" \
			-Wl,--no-as-needed -ldep -Wl,--enable-new-dtags,-rpath,'$ORIGIN'
	) &
	jobs+=($!)
	# A plugin whose dependency (tls/libiedep.so) holds static TLS.
	(
		build tls/libiedep.so plug -DVALUE=45 -DTLS=1200 -DTLS_IE -Wl,-soname,libiedep.so
		wait "${jobs[-1]}"
		gcc -shared -fPIC -O2 -o "$D/tls/host.so" "$S/plug.c" -DVALUE=46 -L"$D/tls" \
			-Wl,--no-as-needed -liedep -Wl,--enable-new-dtags,-rpath,'$ORIGIN'
	) &
	jobs+=($!)
	# Initial-exec code (DF_STATIC_TLS) and no TLS of its own: it reaches
	# libc's errno, static from the start, as libm does.
	mkdir -p "$D/tls"
	printf '%s\n' '#include <errno.h>' '#undef errno' \
		'extern __thread int errno __attribute__((tls_model("initial-exec")));' \
		'int plug_value(void) { errno = 0; return 47; }' >"$D/tls/ie.c"
	gcc -shared -fPIC -O2 -o "$D/tls/ie.so" "$D/tls/ie.c" &
	jobs+=($!)
	# dltest itself as a main program with a RUNPATH, with an RPATH, and
	# built at -O0 (its frames are rbp-based).
	mkdir -p "$D/bin"
	local dltest=("$FDG_ROOT/tests/helpers/dltest.c" -std=gnu11 -O2 -D_GNU_SOURCE -pthread -ldl)
	gcc -o "$D/bin/dltest-runpath" "${dltest[@]}" -Wl,--enable-new-dtags,-rpath,'$ORIGIN/lib' &
	jobs+=($!)
	gcc -o "$D/bin/dltest-rpath" "${dltest[@]}" -Wl,--disable-new-dtags,-rpath,"$D/a" &
	jobs+=($!)
	gcc -o "$D/bin/dltest-O0" "${dltest[@]}" -O0 &
	jobs+=($!)
	# Not loadable: not ELF; an undefined symbol under RTLD_NOW.
	mkdir -p "$D/bad"
	echo "not an ELF object" >"$D/bad/notelf.so"
	printf 'extern int fdg_missing(void);\nint plug_value(void) { return fdg_missing(); }\n' \
		>"$D/bad/undef.c"
	gcc -shared -fPIC -o "$D/bad/undef.so" "$D/bad/undef.c"
	for job in "${jobs[@]}"; do
		wait "$job"
	done
}

setup() {
	DT=$FDG_BIN/dltest
	[[ -x $DT ]] || fail "dltest not built (make helpers)"
	[[ -f $FDG_LIB_O0 ]] || fail "no -O0 build of the shim at $FDG_LIB_O0"
	local v
	for v in $(compgen -e FDGUARD); do
		unset "$v"
	done
	unset LD_PRELOAD
	RT=$(fdg_runtime_preload)
	case ${FDG_SANITIZE:-} in
	address | thread) INTERCEPTED=1 ;;
	*) INTERCEPTED= ;;
	esac
	LDCONF=/etc/ld.so.conf.d/fdguard-test.conf
	declare -gA BG=()
}

teardown() {
	if [[ -n ${LDCONF_OURS:-} ]]; then
		rm -f "$LDCONF"
		ldconfig
	fi
}

# dl LIB PROGRAM ARGS...: runs PROGRAM with LIB preloaded ('': without the
# shim; the sanitizer runtime, if any, comes first either way). Sets $status,
# $output (stdout) and $stderr. FDGUARD_* and LD_LIBRARY_PATH given as prefix
# assignments reach the program. 30 s watchdog. (Not bats' run: these tests
# start some 200 short processes, and run costs more than each of them.)
dl() {
	dl_start fg "$@"
	dl_wait fg
}

# dl_start SLOT LIB PROGRAM ARGS...: dl in the background; dl_wait SLOT
# collects it. Runs that only count go in parallel: 2 cores, quicker suite.
dl_start() {
	local slot=$1 lib=$2 pre=$RT
	shift 2
	[[ -n $lib ]] && pre=${pre:+$pre:}$lib
	timeout -k 2 30 env LD_PRELOAD="$pre" "$@" >"$BATS_TEST_TMPDIR/$slot.out" \
		2>"$BATS_TEST_TMPDIR/$slot.err" &
	BG[$slot]=$!
}

dl_wait() {
	status=0
	wait "${BG[$1]}" || status=$?
	output=$(<"$BATS_TEST_TMPDIR/$1.out")
	stderr=$(<"$BATS_TEST_TMPDIR/$1.err")
}

# ran: the last run exited 0; otherwise show it.
ran() {
	if [[ $status -ne 0 ]]; then
		printf 'exit %s\nstdout:\n%s\nstderr:\n%s\n' "$status" "$output" "$stderr"
		return 1
	fi
}

# has_line TEXT: the last run's stdout has the line TEXT (lib.bash's has:
# TEXT anywhere).
has_line() {
	if ! grep -qxF -- "$1" <<<"$output"; then
		printf 'expected the line "%s" in:\n%s\nstderr:\n%s\n' "$1" "$output" "$stderr"
		return 1
	fi
}

# finds TEXT: like has_line, but not under a sanitizer that intercepts dlopen
# (there the loader sees the sanitizer runtime as every caller).
finds() {
	[[ -n $INTERCEPTED ]] || has_line "$1"
}

# same_as WHAT REFERENCE: the last run's stdout is REFERENCE; otherwise a diff.
same_as() {
	if [[ $output != "$2" ]]; then
		printf 'under %s the result differs from the run without the shim:\n' "$1"
		diff <(echo "$2") <(echo "$output") | sed 's/^/  /'
		printf 'stderr:\n%s\n' "$stderr"
		return 1
	fi
}

# fidelity [MODES] PROGRAM ARGS...: PROGRAM ARGS without the shim, then
# under the -O2 and -O0 builds in each mode (default: keep and cache) and
# with FDGUARD=off; the same stdout every time. The runs go in parallel. The
# reference run's stdout is left in $output and $bare.
fidelity() {
	local modes="keep cache" lib mode i bad=0 what=()
	if [[ $1 == keep || $1 == cache || $1 == "keep cache" ]]; then
		modes=$1
		shift
	fi
	dl_start bare '' "$@"
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		for mode in $modes; do
			FDGUARD_DLOPEN=$mode dl_start "${#what[@]}" "$lib" "$@"
			what+=("${lib#"$FDG_ROOT"/} FDGUARD_DLOPEN=$mode")
		done
		FDGUARD=off dl_start "${#what[@]}" "$lib" "$@"
		what+=("${lib#"$FDG_ROOT"/} FDGUARD=off")
	done
	dl_wait bare
	ran || bad=2
	bare=$output
	for i in "${!what[@]}"; do
		dl_wait "$i"
		((bad == 2)) && continue # no reference: just reap
		if ! ran; then
			echo "(under ${what[i]})"
			bad=1
		elif ! same_as "${what[i]}" "$bare"; then
			bad=1
		fi
	done
	output=$bare
	return "$bad"
}

# ---- where the loader looks: the caller's RUNPATH, RPATH, $ORIGIN, namespace

@test "RUNPATH=\$ORIGIN/lib: a library opens libplug.so from its own lib/ (both builds, keep and cache)" {
	fidelity "$DT" via "$D/rc/libcaller.so" libplug.so
	finds "libplug.so: value=3 path=$D/rc/lib/libplug.so"
}

@test "RUNPATH=\$ORIGIN/lib: the main program opens libplug.so from its own lib/" {
	fidelity "$D/bin/dltest-runpath" open libplug.so
	finds "libplug.so: value=5 path=$D/bin/lib/libplug.so"
	# The helper built without a RUNPATH finds nothing: the caller decides.
	fidelity "$DT" open libplug.so
	has_line "libplug.so: error=libplug.so: cannot open shared object file: No such file or directory"
}

@test "the name \$ORIGIN/plugins/x.so is relative to the calling object" {
	fidelity "$DT" via "$D/rc/libcaller.so" '$ORIGIN/plugins/x.so'
	finds "\$ORIGIN/plugins/x.so: value=4 path=$D/rc/plugins/x.so"
	fidelity "$D/bin/dltest-runpath" open '$ORIGIN/plugins/x.so'
	finds "\$ORIGIN/plugins/x.so: value=6 path=$D/bin/plugins/x.so"
}

@test "DT_RPATH wins over LD_LIBRARY_PATH for a caller without RUNPATH; RUNPATH does not" {
	LD_LIBRARY_PATH=$D/b fidelity "$DT" via "$D/rp/libcaller.so" libplug.so
	finds "libplug.so: value=1 path=$D/a/libplug.so"
	LD_LIBRARY_PATH=$D/b fidelity "$D/bin/dltest-rpath" open libplug.so
	finds "libplug.so: value=1 path=$D/a/libplug.so"
	# Controls: LD_LIBRARY_PATH is in effect, and beats a RUNPATH.
	LD_LIBRARY_PATH=$D/b fidelity "$DT" open libplug.so
	has_line "libplug.so: value=2 path=$D/b/libplug.so"
	LD_LIBRARY_PATH=$D/b fidelity "$DT" via "$D/rc/libcaller.so" libplug.so
	finds "libplug.so: value=2 path=$D/b/libplug.so"
}

@test "a caller inside a dlmopen(LM_ID_NEWLM) namespace: the object lands in that namespace" {
	fidelity "$DT" ns "$D/rc/libcaller.so" libplug.so
	has_line "caller namespace: new"
	finds "opened: value=3 path=$D/rc/lib/libplug.so"
	finds "opened object's namespace: the caller's"
	has_line "in the base namespace too: NULL"
}

@test "a dlmopen namespace caller reaching the shim's dlopen through a function pointer" {
	# A plugin API that hands the host's dlopen to the plugin: the loader
	# still resolves from the return address, in the plugin's namespace.
	fidelity "$DT" ns "$D/rc/libcaller.so" libplug.so fp
	has_line "caller namespace: new"
	finds "opened: value=3 path=$D/rc/lib/libplug.so"
	finds "opened object's namespace: the caller's"
	fidelity "$DT" ns "$D/rc/libcaller.so" "$D/rc/lib/libplug.so" fp
	finds "opened object's namespace: the caller's"
	finds "in the base namespace too: NULL"
}

@test "the main program versus a library as caller: only the library's RUNPATH finds libonly.so" {
	fidelity "$DT" who "$D/oc/libcaller.so" libonly.so
	has_line "main: error=libonly.so: cannot open shared object file: No such file or directory"
	finds "library: value=7 path=$D/only/libonly.so"
	finds "main while the library holds it: handle"
}

@test "keep mode: after the library closed libonly.so, the main program still cannot open it" {
	fidelity "$DT" who "$D/oc/libcaller.so" libonly.so after
	has_line "main after the library closed it: error=libonly.so: cannot open shared object file: No such file or directory"
}

@test "dlopen(NULL) is the main program" {
	fidelity "$DT" null
	has_line "dlopen(NULL) twice: same handle"
	has_line "its link map: the main program, namespace 0"
	has_line 'dlsym(it, "dlopen"): found'
	has_line "dlclose: 0 0"
}

# ---- loader state: RTLD_GLOBAL, RTLD_NODELETE, RTLD_NOLOAD, reference counts

@test "RTLD_GLOBAL reopens reach the loader: promotion makes plug_value visible to dlsym(RTLD_DEFAULT)" {
	fidelity "$DT" global "$D/p/plug.so"
	has_line "RTLD_LOCAL: plug_value not visible to dlsym(RTLD_DEFAULT)"
	has_line "reopen RTLD_GLOBAL: same handle, plug_value visible"
	has_line "RTLD_NOLOAD|RTLD_GLOBAL: same handle"
	fidelity "$DT" global2 "$D/p/plug.so"
	has_line "RTLD_NOLOAD|RTLD_GLOBAL: same handle, plug_value visible"
}

@test "RTLD_NODELETE reaches the loader: after the last close the object stays, RTLD_NOLOAD finds it" {
	fidelity "$DT" nodelete "$D/p/plug.so"
	has_line "after both closes: ctors=1 dtors=0 mapped=yes"
	has_line "RTLD_NOLOAD: same handle"
	has_line "RTLD_NOLOAD (a site that never opened it): same handle"
}

@test "RTLD_NOLOAD: NULL before any open and after the last close (from any site), the handle while held" {
	fidelity "$DT" noload "$D/p/plug.so"
	has_line "before any open: NULL, dlerror NULL"
	has_line "while held (same site): same handle"
	has_line "while held (other site): same handle"
	has_line "after the last close (same site): NULL, dlerror NULL"
	has_line "after the last close (other site): NULL"
	has_line "after the last close (a site that never opened it): NULL"
}

@test "RTLD_NOLOAD|RTLD_GLOBAL after the last close loads and promotes nothing" {
	fidelity "$DT" noload_global "$D/p/plug.so"
	has_line "RTLD_NOLOAD|RTLD_GLOBAL after the last close: NULL"
	has_line "plug_value not visible"
}

@test "RTLD_NOLOAD of libc.so.6 after the program opened and closed it: still loaded" {
	fidelity "$DT" noload_libc
	has_line "libc.so.6 RTLD_NOLOAD after open+close: handle"
}

@test "invalid modes get glibc's own error from the loader, also where the cache holds the object" {
	# glibc: no RTLD_LAZY/RTLD_NOW is "invalid mode for dlopen()", an unknown
	# bit "invalid mode parameter"; the shim must not answer those itself.
	fidelity "$DT" modes "$D/p/plug.so"
	has_line "held, mode 0: NULL, dlerror $D/p/plug.so: invalid mode for dlopen(): Invalid argument"
	has_line "held, mode RTLD_NOLOAD: NULL, dlerror $D/p/plug.so: invalid mode for dlopen(): Invalid argument"
	has_line "closed, mode 0: NULL, dlerror $D/p/plug.so: invalid mode for dlopen(): Invalid argument"
	has_line "held, mode RTLD_NOW|0x80000: NULL, dlerror invalid mode parameter"
	has_line "closed, mode RTLD_LAZY|0x10: NULL, dlerror invalid mode parameter"
}

@test "keep mode: an idle copy loaded with RTLD_LAZY does not answer a later RTLD_NOW (which fails afresh)" {
	fidelity "$DT" lazy_now "$D/bad/undef.so"
	has_line "RTLD_LAZY: handle"
	has_line "then RTLD_NOW: $D/bad/undef.so: undefined symbol: fdg_missing"
	has_line "then RTLD_LAZY again: handle"
}

@test "keep mode: a closed RTLD_GLOBAL plugin does not interpose on a later plugin's symbols" {
	fidelity "$DT" global_leak "$D/p/plug.so" "$D/p/other.so"
	has_line "B's plug_value() as B's own code calls it: 11 (B's own: 11)"
}

@test "reference counts: 50 opens and 50 closes unload in cache mode, keep one idle copy in keep mode" {
	local lib
	dl '' "$DT" refs "$D/p/plug.so" 50
	ran
	has_line "opened 50 times: ctors=1"
	has_line "one reference left: dtors=0 loaded=yes"
	has_line "closed 50 times: dtors=1 loaded=no mapped=no"
	bare=$output
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		FDGUARD_DLOPEN=cache dl "$lib" "$DT" refs "$D/p/plug.so" 50
		ran
		same_as "$lib cache" "$bare"
		# keep: resident after the last close (no longer mapped from its
		# file: detached); with room for one idle object, another object's
		# close evicts it, and only a balanced count (the loader holds
		# exactly the shim's reference) unloads it.
		FDGUARD_DLOPEN_KEEP=1 dl "$lib" "$DT" refs "$D/p/plug.so" 50 "$D/p/other.so"
		ran
		has_line "opened 50 times: ctors=1"
		has_line "closed 50 times: dtors=0 loaded=yes mapped=no"
		has_line "after another object's open+close: dtors=1 loaded=no"
	done
}

# ---- dlerror

@test "dlerror after a permanent failure: the loader's message once, then NULL" {
	fidelity "$DT" dlerror libfdg-nothere.so "$D/nothere.so" "$D/bad/notelf.so" \
		"$D/bad/undef.so" "$D/bad"
	has_line "  first dlerror: libfdg-nothere.so: cannot open shared object file: No such file or directory"
	has_line "  first dlerror: $D/bad/undef.so: undefined symbol: fdg_missing"
	[[ $(grep -c '^  second dlerror: NULL$' <<<"$output") -eq 5 ]]
}

@test "dlerror: a successful dlopen (of an object the program holds) clears a pending message" {
	fidelity "$DT" dlerror_clear "$D/p/plug.so" libfdg-nothere.so
	has_line "round 1: dlerror after a successful dlopen: NULL"
	has_line "round 2: dlerror after a successful dlopen: NULL"
}

@test "dlerror: every close and open the cache answers clears a pending message, and leaves errno alone" {
	fidelity "$DT" dlerror_close "$D/p/plug.so" libfdg-nothere.so
	has_line "dlclose (not the last): 0, errno 1234, dlerror NULL"
	has_line "dlclose (the last): 0, errno 1234, dlerror NULL"
	has_line "RTLD_NOLOAD after it: NULL, errno 1234, dlerror NULL"
	has_line "reopened: handle, errno 1234, dlerror NULL"
}

@test "dlerror: a message a constructor's failed dlopen left survives the successful outer dlopen" {
	fidelity "$DT" ctor_error "$D/ctorerr/plug.so"
	has_line "dlopen: handle"
	has_line "dlerror: libfdg-nothere-ctor.so: cannot open shared object file: No such file or directory"
	has_line "dlerror again: NULL"
}

# ---- churn, hot reload

@test "churn, keep mode: 2000 cycles, /proc/self/maps flat, the constructor ran once" {
	local lib st=$BATS_TEST_TMPDIR/stats
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		FDGUARD_STATS=$st.${lib//\//_} dl_start "${lib//\//_}" "$lib" "$DT" churn "$D/p/plug.so" 2000
	done
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		dl_wait "${lib//\//_}"
		st=$BATS_TEST_TMPDIR/stats.${lib//\//_}
		ran
		has_line "cycles=2000 value_sum=20000"
		has_line "ctors=1 dtors=0"
		(($(field maps_last) == $(field maps_first) && $(field maps_max) == $(field maps_first)))
		[[ $(stats_counter "$st" dlopen_hits) == 1999 ]]
		[[ $(stats_counter "$st" dlopen_misses) == 1 ]]
		[[ $(stats_counter "$st" dlopen_loads) == 1 ]]
		[[ $(stats_counter "$st" dlopen_unloads) == 0 ]]
		echo "# ${lib#"$FDG_ROOT"/} keep: ${output//$'\n'/, }, dlopen_hits=1999" >&3
	done
}

@test "churn, cache mode: constructors and destructors run 2000 times each, as without the shim" {
	local lib st=$BATS_TEST_TMPDIR/stats
	dl_start bare '' "$DT" churn "$D/p/plug.so" 2000
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		FDGUARD_DLOPEN=cache FDGUARD_STATS=$st.${lib//\//_} \
			dl_start "${lib//\//_}" "$lib" "$DT" churn "$D/p/plug.so" 2000
	done
	dl_wait bare
	ran
	has_line "ctors=2000 dtors=2000"
	echo "# without the shim: ${output//$'\n'/, }" >&3
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		dl_wait "${lib//\//_}"
		st=$BATS_TEST_TMPDIR/stats.${lib//\//_}
		ran
		has_line "ctors=2000 dtors=2000"
		(($(field maps_last) == $(field maps_first) && $(field maps_max) == $(field maps_first)))
		[[ $(stats_counter "$st" dlopen_loads) == 2000 ]]
		[[ $(stats_counter "$st" dlopen_unloads) == 2000 ]]
		echo "# ${lib#"$FDG_ROOT"/} cache: ${output//$'\n'/, }" >&3
	done
}

@test "FDGUARD_DLOPEN=off and FDGUARD=off pass through: a load and an unload per cycle" {
	local st=$BATS_TEST_TMPDIR/stats
	FDGUARD_DLOPEN=off FDGUARD_STATS=$st dl "$FDG_LIB" "$DT" churn "$D/p/plug.so" 300
	ran
	has_line "ctors=300 dtors=300"
	(($(field maps_last) == $(field maps_first)))
	# Nothing reached the cache: the process never engaged, so no stats file.
	[[ ! -e $st ]]
	FDGUARD=off dl "$FDG_LIB_O0" "$DT" churn "$D/p/plug.so" 300
	ran
	has_line "ctors=300 dtors=300"
	# Pass-through keeps the caller's resolution too.
	FDGUARD_DLOPEN=off dl "$FDG_LIB" "$DT" via "$D/rc/libcaller.so" libplug.so
	ran
	finds "libplug.so: value=3 path=$D/rc/lib/libplug.so"
}

@test "hot reload: a new build renamed over the plugin between cycles is what runs" {
	local lib mode st=$BATS_TEST_TMPDIR/stats r=$BATS_TEST_TMPDIR/r
	for lib in '' "$FDG_LIB" "$FDG_LIB_O0"; do
		for mode in keep cache; do
			[[ -z $lib && $mode == cache ]] && continue
			rm -rf "$r"
			mkdir -p "$r"
			# Each new build written under a temporary name, renamed by dltest.
			cp "$D/reload/v1.so" "$r/plug.so"
			cp "$D/reload/v2.so" "$r/.new2"
			cp "$D/reload/v3.so" "$r/.new3"
			cp "$D/reload/v1.so" "$r/.new1"
			FDGUARD_DLOPEN=$mode FDGUARD_STATS=$st dl "$lib" "$DT" reload "$r/plug.so" \
				"$r/.new2" "$r/.new3" "$r/.new1"
			ran
			has_line "cycle 0: value=1"
			has_line "cycle 1: value=2"
			has_line "cycle 2: value=3"
			has_line "cycle 3: value=1"
			has_line "replaced copies still mapped: 0"
			if [[ -n $lib && $mode == keep ]]; then
				[[ $(stats_counter "$st" dlopen_reloads) == 3 ]]
			fi
		done
	done
}

@test "hot reload: a replaced plugin reopened with RTLD_GLOBAL (a mode change) is the new file" {
	local lib r=$BATS_TEST_TMPDIR/r
	for lib in '' "$FDG_LIB" "$FDG_LIB_O0"; do
		rm -rf "$r"
		mkdir -p "$r"
		cp "$D/reload/v1.so" "$r/plug.so"
		cp "$D/reload/v2.so" "$r/.new2"
		dl "$lib" "$DT" reload_global "$r/plug.so" "$r/.new2"
		ran
		has_line "RTLD_LOCAL: value=1"
		has_line "replaced, reopened RTLD_GLOBAL: value=2"
	done
}

# over/v1.so and over/v2.so differ in code layout (-O2, -O0): run from v2's
# bytes, v1's destructor and GOT are garbage. cp-style writes go into the
# same inode; every run gets its own copy.
overwrite() { # LIB MODE WHAT(plugin|dep) reopen|exit
	local r
	r=$(mktemp -d "$BATS_TEST_TMPDIR/ow.XXXXXX")
	if [[ $3 == plugin ]]; then
		cp "$D/over/v1.so" "$r/plug.so"
		FDGUARD_DLOPEN=$2 FDGUARD_STATS=$r/stats dl "$1" "$DT" overwrite "$r/plug.so" "$r/plug.so" \
			"$D/over/v2.so" "$4"
	else
		cp "$D/over/host.so" "$D/over/libdep.so" "$r/"
		FDGUARD_DLOPEN=$2 FDGUARD_STATS=$r/stats dl "$1" "$DT" overwrite "$r/host.so" "$r/libdep.so" \
			"$D/over/dep-v2.so" "$4"
	fi
	stats=$r/stats
}

@test "keep mode: a plugin overwritten in place (cp) while idle: the reopen runs the new file, the process exits 0" {
	local lib mode what end ref
	for what in plugin dep; do
		for end in reopen exit; do
			overwrite '' keep "$what" "$end"
			ran
			ref=$output
			[[ $end == exit ]] || has_line "reopened: value=$([[ $what == plugin ]] && echo 2 || echo 30)"
			for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
				for mode in keep cache; do
					overwrite "$lib" "$mode" "$what" "$end"
					if [[ $mode == cache ]]; then
						ran
						same_as "$lib cache, $what, $end" "$ref"
						continue
					fi
					# Destructors run later in keep mode: the counts differ; the
					# values, and the exit status, may not.
					ran
					same_as "$lib keep, $what, $end" "$(grep -v '^ctors=' <<<"$ref")
$(grep '^ctors=' <<<"$output")"
					if [[ $end == reopen ]]; then
						[[ $(stats_counter "$stats" dlopen_reloads) == 1 ]]
					fi
				done
			done
		done
	done
}

@test "keep mode: an object another one loaded later depends on is not kept idle: RTLD_NOLOAD still finds it" {
	# Without the shim it stays loaded for the other object; the shim closes
	# it for real rather than keep it (nor copy it: its data is in use).
	fidelity "$DT" needed "$D/over/libdep.so" "$D/over/host.so"
	has_line "DEP closed, HOST holds it: RTLD_NOLOAD same handle"
	has_line "HOST closed too: RTLD_NOLOAD NULL"
}

@test "keep mode: a dependency an idle plugin brought is gone for the application too" {
	fidelity "$DT" idle_dep "$D/over/host.so" "$D/over/libdep.so"
	has_line "HOST closed: DEP RTLD_NOLOAD NULL"
	has_line "DEP opened: value=31, constructors run 1"
}

@test "keep mode, 4 threads, room for one idle object: evictions, detaches and reloads race; every call works" {
	# Objects go idle (and are detached), get evicted and reloaded while the
	# other threads open and close them and the plugin that brings a
	# dependency. Under ASan this is the use-after-free check of the loader
	# walks. TSan cannot see ld.so's internal locks, which order its frees
	# after our reads, and reports those reads.
	[[ ${FDG_SANITIZE:-} != thread ]] || skip "TSan does not see ld.so's locks"
	local lib
	for lib in '' "$FDG_LIB" "$FDG_LIB_O0"; do
		FDGUARD_DLOPEN_KEEP=1 dl "$lib" "$DT" threads 2000 "$D/p/plug.so" "$D/p/other.so" "$D/over/host.so"
		ran
		has_line "threads=4 cycles=2000 errors=0"
	done
}

@test "keep mode: a cache entry whose caller was unloaded is not reused by a library mapped at its address" {
	# ha/host.so and hb/host.so each depend on their own libcaller.so, which
	# calls dlopen("libplug.so") (found in its $ORIGIN/lib). With room for two
	# idle objects, closing a third evicts ha/host.so and its libcaller;
	# hb/host.so then maps at the same addresses.
	FDGUARD_DLOPEN_KEEP=2 fidelity "$DT" reuse "$D/ha/host.so" "$D/hb/host.so" "$D/p/other.so"
	finds "A's libcaller opens libplug.so: value=21 path=$D/ha/lib/libplug.so"
	[[ $output == *"where A's was: yes"* ]] ||
		skip "hb/libcaller.so did not map where ha/libcaller.so was: nothing to check"
	finds "B's libcaller opens libplug.so: value=22 path=$D/hb/lib/libplug.so"
}

# ---- transient loader failures

@test "transient: 'failed to map segment' under a low RLIMIT_AS raised 50 ms later: retried with the shim" {
	local lib st=$BATS_TEST_TMPDIR/stats
	dl '' "$DT" transient "$D/big/libbig.so" 50
	ran
	has_line "result: error=$D/big/libbig.so: failed to map segment from shared object"
	has_line "once the limit is back: loaded"
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		# Backoff 1, 2, 4 ... ms (each drawn from [d/2, d]): ten retries
		# wait at least 200 ms in all, far more than the 50 needed.
		FDGUARD_DLOPEN_RETRIES=10 FDGUARD_STATS=$st dl "$lib" "$DT" transient "$D/big/libbig.so" 50
		ran
		has_line "result: loaded value=8"
		has_line "dlerror after: NULL"
		local n
		n=$(stats_counter "$st" dlopen_retries)
		((n >= 1 && n <= 10))
		[[ $stderr == *"failed to map segment from shared object; retry 1 of 10"* ]]
		echo "# ${lib#"$FDG_ROOT"/}: loaded after $n retries (${stderr##*dltest: })" >&3
	done
}

@test "transient: retries exhausted, the application reads the loader's own message" {
	local lib
	dl '' "$DT" transient "$D/big/libbig.so" 300
	ran
	bare=$output
	has_line "result: error=$D/big/libbig.so: failed to map segment from shared object"
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		FDGUARD_DLOPEN_RETRIES=2 FDGUARD_BACKOFF_MAX_MS=5 dl "$lib" "$DT" transient "$D/big/libbig.so" 300
		ran
		same_as "$lib" "$bare"
	done
}

# ---- descriptor exhaustion and /etc/ld.so.cache

# ldcache_dir: $dir, a directory registered in /etc/ld.so.conf.d with
# libfdgtest-ldcache.so.1 and libfdgtest-ldcache2.so.1 (value 9) in it, which
# only /etc/ld.so.cache knows; teardown unregisters it. Skips unless root.
ldcache_dir() {
	if ((EUID != 0)); then
		unavailable "needs root: registers a test directory in /etc/ld.so.conf.d and runs ldconfig"
	fi
	[[ ! -e $LDCONF ]] || fail "$LDCONF exists already (a previous run died?); remove it and run ldconfig"
	dir=$BATS_TEST_TMPDIR/ldcache
	local lib
	mkdir -p "$dir"
	for lib in libfdgtest-ldcache libfdgtest-ldcache2; do
		gcc -shared -fPIC -O2 -o "$dir/$lib.so.1" "$FDG_ROOT/tests/dlplug/plug.c" -DVALUE=9 \
			-Wl,-soname,"$lib.so.1"
	done
	LDCONF_OURS=1
	echo "$dir" >"$LDCONF"
	ldconfig
	ldconfig -p | grep -qF "$dir/libfdgtest-ldcache.so.1" || fail "ldconfig did not register $dir"
	fidelity "$DT" open libfdgtest-ldcache.so.1 # an ordinary load finds it
}

@test "at the descriptor limit: a library only /etc/ld.so.cache knows loads, and the cache stays usable" {
	local dir lib
	ldcache_dir

	dl '' "$DT" emfile libc.so.6 libfdgtest-ldcache.so.1 libfdgtest-ldcache2.so.1
	ran
	has_line "free descriptors at the lowered limit: none (Too many open files)"
	has_line "at the limit: error=libfdgtest-ldcache.so.1: cannot open shared object file: Too many open files"
	# glibc gave up its cache for good: no more loads through it.
	has_line "limit restored: error=libfdgtest-ldcache.so.1: cannot open shared object file: No such file or directory"
	has_line "limit restored, another library: error=libfdgtest-ldcache2.so.1: cannot open shared object file: No such file or directory"
	local st=$BATS_TEST_TMPDIR/stats
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		FDGUARD_STATS=$st dl "$lib" "$DT" emfile libc.so.6 libfdgtest-ldcache.so.1 libfdgtest-ldcache2.so.1
		ran
		has_line "free descriptors at the lowered limit: none (Too many open files)"
		has_line "at the limit: value=9 path=$dir/libfdgtest-ldcache.so.1"
		has_line "limit restored: value=9 path=$dir/libfdgtest-ldcache.so.1"
		has_line "limit restored, another library: value=9 path=$dir/libfdgtest-ldcache2.so.1"
		[[ $(stats_counter "$st" dlopen_fd_lends) -ge 1 ]]
	done
}

@test "at the descriptor limit: a missing library's message is glibc's own, and /etc/ld.so.cache stays usable" {
	local dir lib
	ldcache_dir
	# Without the shim, and a free descriptor: the message to expect.
	dl '' "$DT" dlerror libfdg-nothere.so
	ran
	has_line "  first dlerror: libfdg-nothere.so: cannot open shared object file: No such file or directory"
	# Without the shim at the limit: the wrong message, and no cache after.
	dl '' "$DT" emfile_missing libc.so.6 libfdg-nothere.so libfdgtest-ldcache2.so.1
	ran
	has_line "at the limit: libfdg-nothere.so: cannot open shared object file: Too many open files"
	has_line "limit restored, a library only the cache knows: error=libfdgtest-ldcache2.so.1: cannot open shared object file: No such file or directory"
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		dl "$lib" "$DT" emfile_missing libc.so.6 libfdg-nothere.so libfdgtest-ldcache2.so.1
		ran
		has_line "at the limit: libfdg-nothere.so: cannot open shared object file: No such file or directory"
		has_line "dlerror again: NULL"
		has_line "limit restored, a library only the cache knows: value=9 path=$dir/libfdgtest-ldcache2.so.1"
	done
}

# ---- backtraces, shadow stacks, fork

# ctor_frames: the constructor's frames in the last run's stdout.
ctor_frames() {
	sed -n '/^  ctor$/,/^  dtor$/p' <<<"$output" | grep -vx '  ctor' | grep -vx '  dtor'
}

# bt_compare WHAT REF [keep]: the last run's backtraces are REF's but for
# the frames the shim inserted right after glibc's dlopen in the
# constructor's (left in $inserted, one per line); in keep mode no
# destructor ran at dlclose.
bt_compare() {
	local ref=$2 nx rest
	nx=$(grep -m1 -A1 -F 'libc.so.6(dlopen+' <<<"$ref" | sed -n 2p)
	[[ -n $nx ]] || fail "no dlopen frame in the reference" || return 1
	inserted=$(awk -v nx="$nx" 'f && $0 == nx { exit } f { print } index($0, "libc.so.6(dlopen+") { f = 1 }' <<<"$output")
	rest=$(awk -v nx="$nx" 'f && $0 == nx { f = 0 } !f { print } index($0, "libc.so.6(dlopen+") { f = 1 }' <<<"$output")
	[[ ${3:-} != keep ]] || ref=$(sed '/^  dtor$/,$d' <<<"$ref")
	output=$rest same_as "$1" "$ref"
}

@test "backtrace from a constructor run by a dlopen miss: glibc's frames, the gadget's and the trampoline's, then the caller's (both builds)" {
	local lib mode n_bare n k=2
	# The helpers of sanitizer builds keep frame pointers: dltest then has
	# rbp-based returns, whose frame leads straight to the caller (see the
	# next test). Under ASan and TSan the runtime's interceptor is the caller.
	[[ -z ${FDG_SANITIZE:-} ]] || k=1
	dl '' "$DT" bt "$D/bt/bt.so"
	ran
	local ref=$output
	n_bare=$(ctor_frames | wc -l)
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		for mode in keep cache; do
			FDGUARD_DLOPEN=$mode dl "$lib" "$DT" bt "$D/bt/bt.so"
			ran
			n=$(ctor_frames | wc -l)
			# In cache mode the destructor's frames are glibc's own (the last
			# dlclose is a tail call).
			bt_compare "${lib#"$FDG_ROOT"/} $mode" "$ref" "$mode"
			# The caller's object (its return gadget), then the trampoline.
			[[ -n $INTERCEPTED || $(wc -l <<<"$inserted") == "$k" ]]
			((n == n_bare + $(wc -l <<<"$inserted")))
			[[ -n $INTERCEPTED || $(sed -n 1p <<<"$inserted") == "  dltest(+0x"* ]]
			[[ $(wc -l <<<"$inserted") == 1 || $(sed -n 2p <<<"$inserted") == "  libfdguard.so(+0x"* ]]
		done
	done
	echo "# constructor's backtrace: $n_bare frames without the shim, $n with it (main: cut at the gadget)" >&3
}

@test "backtrace through a frame-pointer caller, and in a program built at -O0: the gadget's frame leads straight to the caller" {
	[[ -z $INTERCEPTED ]] || skip "the sanitizer's interceptor is the caller"
	local lib mode ref prog
	for prog in "$DT bt $D/bt/bt.so $D/fp/libcaller.so" "$D/bin/dltest-O0 bt $D/bt/bt.so"; do
		# shellcheck disable=SC2086 # words
		dl '' $prog
		ran
		ref=$output
		for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
			for mode in keep cache; do
				# shellcheck disable=SC2086 # words
				FDGUARD_DLOPEN=$mode dl "$lib" $prog
				ran
				bt_compare "${lib#"$FDG_ROOT"/} $mode: $prog" "$ref" "$mode"
				[[ $(wc -l <<<"$inserted") == 1 ]]
				[[ $inserted == "  libcaller.so("* || $inserted == "  dltest-O0("* ]]
			done
		done
	done
}

@test "FDGUARD=off, FDGUARD_DLOPEN=off and an active shadow stack: dlopen and dlclose are tail calls, backtraces the same frame for frame" {
	local lib v
	dl '' "$DT" bt "$D/bt/bt.so"
	ran
	local ref=$output
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		for v in FDGUARD=off FDGUARD_DLOPEN=off; do
			export "${v?}"
			dl "$lib" "$DT" bt "$D/bt/bt.so"
			unset "${v%%=*}"
			ran
			same_as "${lib#"$FDG_ROOT"/} $v" "$ref"
		done
	done
	for v in keep cache; do
		FDGUARD_DLOPEN=$v dl "$FDG_LIB_SHSTK" "$DT" bt "$D/bt/bt.so"
		ran
		same_as "the shadow-stack test build, $v" "$ref"
	done
}

@test "shadow stacks: the library is marked SHSTK-compatible; with a shadow stack active, dlopen passes straight through" {
	if [[ $(uname -m) == x86_64 ]]; then
		readelf -n "$FDG_LIB" | grep -q 'x86 feature:.*SHSTK' ||
			fail "no SHSTK in the GNU property note of $FDG_LIB: $(readelf -n "$FDG_LIB")"
	fi
	# The test build takes an active shadow stack for granted, and traps
	# where a real one would (the return through the gadget): every call
	# must go to the loader as the application's own, uncached.
	local st=$BATS_TEST_TMPDIR/stats
	FDGUARD_STATS=$st dl "$FDG_LIB_SHSTK" "$DT" churn "$D/p/plug.so" 200
	ran
	has_line "ctors=200 dtors=200"
	# Not a hit, not a miss: the process never engaged, so no stats file.
	[[ ! -e $st ]] || [[ $(stats_counter "$st" dlopen_hits) == 0 && $(stats_counter "$st" dlopen_misses) == 0 ]]
	dl "$FDG_LIB_SHSTK" "$DT" via "$D/rc/libcaller.so" libplug.so
	ran
	finds "libplug.so: value=3 path=$D/rc/lib/libplug.so"
	# The production build on this machine (no shadow stack) caches.
	FDGUARD_STATS=$st dl "$FDG_LIB" "$DT" churn "$D/p/plug.so" 200
	ran
	has_line "ctors=1 dtors=0"
	[[ $(stats_counter "$st" dlopen_hits) == 199 ]]
}

@test "fork while another thread is inside dlopen (cache mode): no child hangs, outcomes as without the shim" {
	# A thread loads and unloads p/other.so in a loop; 300 children, each
	# forked at a random point of that, open p/plug.so (which the parent
	# holds) from a new call site. Without the shim some children stop at
	# an ld.so assertion (the loader was mid-update at the fork); the shim
	# must not add hangs (a loader lock inherited locked).
	[[ ${FDG_SANITIZE:-} != thread ]] ||
		skip "under TSan fork of a multi-threaded process fails (ENOMEM), with or without the shim"
	# Which children assert depends on where the churning thread is at each
	# fork: one run's share swings by some 10 points with the machine's load.
	# Five rounds of 300, without and with each build in turn, and the
	# totals compared: the shim may not add more than 20 points (300 of
	# 1500 children) of assertions, nor any other outcome.
	local -a libs=('' "$FDG_LIB" "$FDG_LIB_O0") opened=(0 0 0) asserted=(0 0 0)
	local round i what
	for ((round = 0; round < 5; round++)); do
		for i in 0 1 2; do
			FDGUARD_DLOPEN=cache dl "${libs[i]}" "$DT" forkload "$D/p/other.so" "$D/p/plug.so" 300
			ran
			[[ $output == *" failed=0 "*" hung=0 other=0" ]]
			opened[i]=$((opened[i] + $(field opened)))
			asserted[i]=$((asserted[i] + $(field ld.so_assertion)))
		done
	done
	for i in 0 1 2; do
		what=${libs[i]#"$FDG_ROOT"/}
		echo "# ${what:-without the shim}: 1500 children, opened=${opened[i]} ld.so_assertion=${asserted[i]}" >&3
	done
	# The race is there to be had: without the shim some children open, some
	# stop at the assertion.
	((opened[0] > 0 && asserted[0] > 0))
	for i in 1 2; do
		((opened[i] > 0))
		((asserted[i] <= asserted[0] + 300))
	done
}

# ---- what a hit costs, and what a detach holds up

@test "a dlopen hit asks _dl_find_object once: the caller's object is found once per call" {
	# tests/hooks/findhook.c, preloaded before the shim, counts the calls of
	# the _dl_find_object the shim binds. glibc's own dlopen makes none.
	local hook=$BATS_TEST_TMPDIR/findhook.so lib n calls
	cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$hook" "$FDG_ROOT/tests/hooks/findhook.c"
	FINDHOOK_OUT=$BATS_TEST_TMPDIR/bare dl "$hook" "$DT" churn "$D/p/plug.so" 100
	ran
	[[ $(<"$BATS_TEST_TMPDIR/bare") == find_object_calls=0 ]]
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		for n in 100 300; do
			FINDHOOK_OUT=$BATS_TEST_TMPDIR/$n dl "$hook:$lib" "$DT" churn "$D/p/plug.so" "$n"
			ran
			has "cycles=$n value_sum=$((10 * n))"
			calls[n]=$(sed -n 's/^find_object_calls=//p' "$BATS_TEST_TMPDIR/$n")
		done
		echo "# ${lib#"$FDG_ROOT"/}: 100 cycles ${calls[100]} calls, 300 cycles ${calls[300]}" >&3
		# 200 more hits, 200 more calls.
		((calls[300] - calls[100] == 200))
	done
}

@test "a detach holds up no hit: another object's dlopen hits go on while 64 MiB are copied" {
	# The last dlclose of big/librodata.so detaches it (copies its pages);
	# meanwhile a thread opens and closes p/plug.so, a cached object, in a
	# loop. It completes thousands of them during the copy; a hit that waited
	# for the copy would let at most one through. Counted, not timed: on a
	# loaded machine the longest gap between two hits is a scheduling
	# hiccup of tens of ms, with or without the shim.
	local lib close hits
	dl '' "$DT" hold_up "$D/big/librodata.so" "$D/p/plug.so"
	ran
	echo "# without the shim: $output" >&3
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		dl "$lib" "$DT" hold_up "$D/big/librodata.so" "$D/p/plug.so"
		ran
		echo "# ${lib#"$FDG_ROOT"/}: $output" >&3
		[[ $output =~ close_ms=([0-9]+)[.][0-9]\ hits_during_close=([0-9]+) ]]
		close=${BASH_REMATCH[1]} hits=${BASH_REMATCH[2]}
		# The close copied (it takes tens of ms); the hits did not wait for it.
		((close >= 10))
		((hits >= 100))
	done
}

# ---- static TLS

@test "static TLS: a closed plugin's block is given back for the next one, as without the shim (initial-exec, TLS descriptors, a dependency's)" {
	local T=$D/tls lib st
	# Without the shim two of these at once do not fit in static TLS:
	dl '' "$DT" open "$T/a.so" "$T/b.so"
	ran
	has "$T/b.so: error=$T/b.so: cannot allocate memory in static TLS block"
	dl '' "$DT" open "$T/desc.so" "$T/big.so"
	ran
	has "$T/big.so: error=$T/big.so: cannot allocate memory in static TLS block"
	# ...but one after the other, each closed before the next, they do.
	fidelity "$DT" cycle "$T/a.so" "$T/b.so" "$T/host.so" "$T/b.so" "$T/desc.so" "$T/big.so"
	has "$T/b.so: value=42 path=$T/b.so"
	has "$T/big.so: value=44 path=$T/big.so"
	# keep mode: an object that holds a block of static TLS, or whose
	# dependency does, is not kept idle (nothing to evict for b.so); a TLS-descriptor object is
	# (its block is optional), and is closed when static TLS runs out.
	for lib in "$FDG_LIB" "$FDG_LIB_O0"; do
		st=$BATS_TEST_TMPDIR/st.${lib//\//_}
		FDGUARD_STATS=$st.1 dl "$lib" "$DT" cycle "$T/a.so" "$T/b.so" "$T/host.so" "$T/b.so"
		ran
		[[ $(stats_counter "$st.1" dlopen_unloads) == 4 && $(stats_counter "$st.1" dlopen_evictions) == 0 ]]
		FDGUARD_STATS=$st.2 FDGUARD_LOG_LEVEL=info dl "$lib" "$DT" cycle "$T/desc.so" "$T/big.so"
		ran
		has "$T/big.so: value=44 path=$T/big.so"
		[[ $(stats_counter "$st.2" dlopen_evictions) == 1 ]]
		[[ $stderr == *"dlopen($T/big.so): static TLS exhausted; idle objects closed, trying again"* ]]
		# Initial-exec code that holds no block (libm's, which libsqlite3
		# brings) is kept idle: one load for three cycles.
		readelf -d "$T/ie.so" | grep -q 'FLAGS.*STATIC_TLS'
		FDGUARD_STATS=$st.3 dl "$lib" "$DT" cycle "$T/ie.so" "$T/ie.so" "$T/ie.so"
		ran
		has "$T/ie.so: value=47 path=$T/ie.so"
		[[ $(stats_counter "$st.3" dlopen_loads) == 1 && $(stats_counter "$st.3" dlopen_unloads) == 0 ]]
	done
}

# ---- policies that refuse executable anonymous memory

@test "a policy that refuses executable anonymous memory: the copy is tried once per process, not at every last dlclose" {
	# dltest noexecmem: a seccomp filter refuses mprotect(PROT_EXEC) with
	# EACCES, as SELinux's execmem denial does (with an audit record each).
	command -v strace >/dev/null || skip "strace is not installed"
	local lib pre refused what
	for lib in '' "$FDG_LIB" "$FDG_LIB_O0"; do
		pre=$RT
		[[ -n $lib ]] && pre=${pre:+$pre:}$lib
		run -0 timeout 30 strace -f -qq -o "$BATS_TEST_TMPDIR/trace" -e trace=mprotect \
			-E LD_PRELOAD="$pre" "$DT" noexecmem churn "$D/p/plug.so" 50
		# Nothing can be kept idle: every cycle loads and unloads, as without the shim.
		[[ ${lines[0]} == "cycles=50 value_sum=500" && ${lines[1]} == "ctors=50 dtors=50" ]]
		refused=$(grep -c 'PROT_EXEC.*EACCES' "$BATS_TEST_TMPDIR/trace" || true)
		what=${lib#"$FDG_ROOT"/}
		echo "# ${what:-without the shim}: $refused refused mprotect(PROT_EXEC) in 50 cycles" >&3
		if [[ -z $lib ]]; then
			((refused == 0))
		else
			((refused == 1))
		fi
	done
}

# ---- a caller's file cut under it

@test "a caller whose file was truncated in place since it was loaded: its dlopen works as without the shim, no SIGBUS" {
	# dltest truncated: fp/libcaller.so (a copy) is cut where its code ends;
	# its code still runs, its unwind tables and data are gone from the file.
	# glibc's dlopen of an absolute path reads none of them; the shim's
	# gadget search must not either.
	local lib mode n=0 ref=
	for lib in '' "$FDG_LIB" "$FDG_LIB_O0"; do
		for mode in keep cache; do
			[[ -z $lib && $mode == cache ]] && continue
			n=$((n + 1))
			cp "$D/fp/libcaller.so" "$BATS_TEST_TMPDIR/caller$n.so"
			FDGUARD_DLOPEN=$mode dl "$lib" "$DT" truncated "$BATS_TEST_TMPDIR/caller$n.so" "$D/p/plug.so"
			ran
			[[ $(stat -c %s "$BATS_TEST_TMPDIR/caller$n.so") -lt $(stat -c %s "$D/fp/libcaller.so") ]]
			if [[ -z $ref ]]; then
				ref=$output
				has "after the truncation: value=10 path=$D/p/plug.so"
				has survived
			else
				same_as "${lib#"$FDG_ROOT"/} $mode" "$ref"
			fi
		done
	done
}
