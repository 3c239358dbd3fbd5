# template-lib.sh: what container-template.sh and machine-template.sh share; they source it and set
# TEMPLATE_KIND (container or machine) and die() first. Its text is part of both scripts' cache keys.

# Fixed identity and dates: the commit depends on the content only.
export GIT_AUTHOR_NAME="BitBuilder tests" GIT_AUTHOR_EMAIL="tests@bitbuilder.invalid"
export GIT_COMMITTER_NAME="BitBuilder tests" GIT_COMMITTER_EMAIL="tests@bitbuilder.invalid"
export GIT_AUTHOR_DATE="2026-01-01T00:00:00+0000" GIT_COMMITTER_DATE="2026-01-01T00:00:00+0000"
# No user or system git configuration steers the build.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME=/nonexistent

# restore_list BASE ROOT: tmpfiles.d lines for what Git does not keep, read from the root BASE the template is
# made from, for what the stripped tree ROOT still has: directories without any file below them (d, parents
# first), and modes other than 0644/0755 or owners other than root (z). Owners are named as the tree's own passwd and group files name them
# (not as this machine's), and directories that a tmpfiles.d file of the tree creates already are left to it.
restore_list() {
	local base=$1 root=$2 path mode uid gid type special owner group
	local -A users groups known
	while IFS=: read -r owner _ uid _; do users[$uid]=$owner; done <"$base/etc/passwd"
	while IFS=: read -r group _ gid _; do groups[$gid]=$group; done <"$base/etc/group"
	# Paths a tmpfiles.d line of the tree creates (or removes) already: a second such line is a "Duplicate line"
	# warning at every boot. Adjusting lines (z, a, h, t ...) go with anything.
	while read -r type path _; do
		case "$type" in [fFwdDeCvqQpLcbxXrR]*) known[$path]=1 ;; esac
	done < <(cat "$root"/usr/lib/tmpfiles.d/*.conf "$root"/etc/tmpfiles.d/*.conf 2>/dev/null)
	echo "# What Git does not store, restored at boot (written by BitBuilder's $TEMPLATE_KIND template build)."
	# Run-time trees are excluded: the container manager or the kernel, and systemd, make them.
	(cd "$base" && find . -xdev \( -path ./dev -o -path ./proc -o -path ./sys -o -path ./run -o -path ./tmp \
		-o -path ./var/tmp \) -prune -o \( -type f -o -type d \) -printf '%y %m %U %G %p\n') |
		while read -r type mode uid gid path; do
			path=${path#.}
			[ -n "$path" ] && [ "$path" != /etc/machine-id ] && [ -e "$root$path" ] || continue
			case "$path" in *[[:space:]\\]*) die "path with white space or a backslash: $path" ;; esac
			owner=${users[$uid]:-$uid} group=${groups[$gid]:-$gid}
			if [ "$type" = d ] && [ -z "$(find "$root$path" ! -type d -print -quit)" ]; then
				[ -n "${known[$path]:-}" ] || echo "d $path $mode $owner $group -"
				continue
			fi
			special=no
			case "$type:$mode" in f:644 | f:755 | d:755) ;; *) special=yes ;; esac
			[ "$uid:$gid" = 0:0 ] || special=yes
			[ $special = no ] || echo "z $path $mode $owner $group -"
		done
}

# commit_tree TREE GITDIR: commit TREE as branch main of the new bare repository GITDIR, exactly as it is: in-tree
# .gitignore and .gitattributes files are neither honoured nor allowed to convert content.
commit_tree() {
	local tree=$1 gitdir=$2
	git init -q --bare -b main "$gitdir"
	printf '* -text -eol -filter -diff -merge -ident -export-ignore -export-subst\n' >"$gitdir/info/attributes"
	local g=(git --git-dir="$gitdir" --work-tree="$tree" -c core.autocrlf=false -c core.safecrlf=false
		-c core.symlinks=true -c core.fileMode=true -c core.precomposeunicode=false -c core.excludesFile=/dev/null)
	"${g[@]}" add --all --force .
	local want have
	want=$(cd "$tree" && find . ! -type d | wc -l)
	have=$("${g[@]}" ls-files | wc -l)
	[ "$want" = "$have" ] || die "git indexed $have of the $want files and symlinks of $tree"
	"${g[@]}" commit -q -m "Debian trixie $TEMPLATE_KIND template with systemd 257"
	rm -f "$gitdir/index"
	# One pack, ready for git-upload-pack to send as it is.
	git --git-dir="$gitdir" gc -q --prune=now
}
