# Sourced by cold_grep.sh and warm_grep.sh: the veilfs binary they mount and the tree they grep.

# grep_tree_veilfs REPO: prints the release binary of REPO, built first if missing.
grep_tree_veilfs() {
	local bin="${CARGO_TARGET_DIR:-$1/target}/release/veilfs"
	[[ -x $bin ]] || (cd "$1" && cargo build --release --quiet >&2)
	printf '%s\n' "$bin"
}

# grep_tree_make REPO TREE FILES WORD: generates TREE once (gen_tree.py, as compare.sh does:
# deterministic source-like text, no secrets, WORD in one file of every 5000, so grep reads
# every byte and redaction scans every file) and warms its page cache.
grep_tree_make() {
	local repo=$1 tree=$2 files=$3 word=$4
	if [[ ! -f $tree/.complete ]]; then
		printf '[grep_tree] generating %s files in %s\n' "$files" "$tree" >&2
		rm -rf "$tree"
		python3 "$repo/benches/gen_tree.py" "$tree" "$files" "$word"
		touch "$tree/.complete"
		# A file changed within 2 s is read only once it settles: a real tree is older than that.
		sleep 2.5
	fi
	find "$tree" -type f -exec cat {} + >/dev/null
}
