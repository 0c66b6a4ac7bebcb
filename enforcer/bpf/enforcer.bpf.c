// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ociguard's in-kernel behaviour enforcer (BPF LSM).
 *
 * A task is governed iff its mount namespace inode is a key of og_containers:
 * ociguard's createRuntime hook writes that entry before the container's
 * process runs its entrypoint, and removes it when the container is deleted.
 * Every other task on the node returns from these programs after one hash
 * lookup.
 *
 * Paths are matched by a DFA compiled in user space from the policy's globs
 * (og_rulesets, shared by every container whose rules are the same). Secrets
 * are matched by inode, derived from the container's mounts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "enforcer.h"

#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) (!!(sym))
#endif

#define EPERM 1
#define SIGKILL 9
#define PROT_EXEC 0x4
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFCHR 0020000
#define PROC_SUPER_MAGIC 0x9fa0
#define PTRACE_MODE_ATTACH 0x02
#define PTRACE_MODE_NOAUDIT 0x04
#define DENTRY_DEPTH 16
#define MINORBITS 20

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* kfuncs (6.12+): the exe of the process opening a secret, by path. */
extern struct file *bpf_get_task_exe_file(struct task_struct *task) __ksym __weak;
extern void bpf_put_file(struct file *file) __ksym __weak;
extern int bpf_path_d_path(struct path *path, char *buf, size_t buf__sz) __ksym __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct og_container);
} og_containers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct og_ruleset);
} og_rulesets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct og_dev_key);
	__type(value, __u8);
} og_secret_devs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct og_inode_key);
	__type(value, __u8);
} og_secret_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} og_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OG_STATS);
	__type(key, __u32);
	__type(value, __u64);
} og_stats SEC(".maps");

/* The ABI version of the loaded object (slot 0), so a newer ociguardd never
 * reinterprets maps pinned by an older one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} og_meta SEC(".maps");

/* What the last execve of a task asked for: its arguments (for the event and
 * the interactive-shell check). Freed with the task. */
struct og_task {
	__u32 interactive;
	__u32 argv_len;
	char argv[OG_ARGV_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct og_task);
} og_tasks SEC(".maps");

/* Per-CPU scratch: paths and the event under construction do not fit the
 * 512-byte stack. LSM programs here are not sleepable, so one per CPU is enough. */
struct og_scratch {
	char path[OG_PATH_MAX];
	char asked[OG_PATH_MAX];
	struct og_event ev;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct og_scratch);
} og_scratch SEC(".maps");

static __always_inline void stat_add(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&og_stats, &slot);
	if (v)
		*v += 1;
}

static __always_inline __u32 task_mntns(struct task_struct *t)
{
	return BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
}

static __always_inline struct og_container *current_container(__u32 *ns)
{
	struct task_struct *t = bpf_get_current_task_btf();
	*ns = task_mntns(t);
	if (!*ns)
		return 0;
	return bpf_map_lookup_elem(&og_containers, ns);
}

static __always_inline struct og_scratch *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&og_scratch, &zero);
}

/* ---------------------------------------------------------------- DFA */

struct walk {
	struct og_ruleset *rs;
	char *buf;
	__u32 len;
	__u32 state;
};

static long dfa_step(__u32 i, void *ctx)
{
	struct walk *w = ctx;
	if (i >= w->len || i >= OG_PATH_MAX)
		return 1;
	__u8 b = w->buf[i & (OG_PATH_MAX - 1)];
	__u32 cls = w->rs->classes[b];
	__u32 idx = w->state * w->rs->nclasses + cls;
	if (idx >= OG_DFA_TRANS) {
		w->state = 0;
		return 1;
	}
	w->state = w->rs->trans[idx];
	return w->state == 0;
}

/* The accept bits of the NUL-terminated `buf` of `len` bytes (without NUL). */
static __always_inline __u8 dfa_match(struct og_ruleset *rs, char *buf, long len)
{
	if (len <= 0 || len >= OG_PATH_MAX)
		return OG_M_UNKNOWN;
	struct walk w = { .rs = rs, .buf = buf, .len = len, .state = 1 };
	bpf_loop(OG_PATH_MAX, dfa_step, &w, 0);
	if (w.state >= OG_DFA_STATES)
		return 0;
	return rs->accept[w.state & (OG_DFA_STATES - 1)];
}

/* bpf_d_path of `path` into buf; the length without NUL, or <= 0. */
static __always_inline long resolved(const struct path *path, char *buf)
{
	long n = bpf_d_path((struct path *)path, buf, OG_PATH_MAX);
	return n > 0 ? n - 1 : -1;
}

/* ---------------------------------------------------------------- events */

static __always_inline void copy_small(char *dst, const char *src)
{
	/* src is a NUL-terminated scratch buffer of OG_PATH_MAX bytes. */
	bpf_probe_read_kernel_str(dst, OG_SMALL_PATH, src);
}

static __always_inline void emit(struct og_scratch *s, __u32 ns, __u8 rule, __u8 action,
				 __u8 hook, __u8 flags, __u32 target, int with_paths)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct og_event *e = bpf_ringbuf_reserve(&og_events, sizeof(*e), 0);
	if (!e) {
		stat_add(OG_STAT_LOST);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->mntns = ns;
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->target = target;
	e->rule = rule;
	e->action = action;
	e->hook = hook;
	e->flags = flags;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	BPF_CORE_READ_STR_INTO(&e->pcomm, t, real_parent, comm);
	e->path[0] = 0;
	e->asked[0] = 0;
	if (with_paths & 1)
		copy_small(e->path, s->path);
	if (with_paths & 2)
		copy_small(e->asked, s->asked);
	e->argv_len = 0;
	e->argv[0] = 0;
	struct og_task *ts = bpf_task_storage_get(&og_tasks, t, 0, 0);
	if (ts) {
		__u32 n = ts->argv_len;
		if (n > OG_ARGV_MAX)
			n = OG_ARGV_MAX;
		e->argv_len = n;
		bpf_probe_read_kernel(e->argv, sizeof(e->argv), ts->argv);
	}
	bpf_ringbuf_submit(e, 0);
	stat_add(OG_STAT_EVENTS);
}

/* The verdict for a matched rule: 0 (audit) or -EPERM, killing the process
 * under `kill`. */
static __always_inline int verdict(__u8 action)
{
	if (action == OG_ACT_KILL)
		bpf_send_signal(SIGKILL);
	if (action >= OG_ACT_DENY) {
		stat_add(OG_STAT_DENIED);
		return -EPERM;
	}
	return 0;
}

/* ---------------------------------------------------------------- files */

static __always_inline int unlinked_or_new(struct og_container *c, struct inode *inode, __u8 *flags)
{
	if (BPF_CORE_READ(inode, __i_nlink) == 0) {
		*flags |= OG_EV_UNLINKED;
		return 1;
	}
	__u64 sec, nsec;
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		sec = BPF_CORE_READ(inode, i_ctime_sec);
		nsec = BPF_CORE_READ(inode, i_ctime_nsec);
	} else {
		return 0;
	}
	return sec * 1000000000ULL + nsec >= c->start_ns;
}

static __always_inline int is_socket(struct file *f)
{
	if (!f)
		return 0;
	return (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) == S_IFSOCK;
}

/* A terminal: ttys (major 4), /dev/tty and /dev/console (5), ptys (136-143). */
static __always_inline int is_tty(struct file *f)
{
	if (!f)
		return 0;
	struct inode *i = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(i, i_mode) & S_IFMT) != S_IFCHR)
		return 0;
	__u32 major = BPF_CORE_READ(i, i_rdev) >> MINORBITS;
	return major == 4 || major == 5 || (major >= 136 && major <= 143);
}

static __always_inline struct file *stdio(struct task_struct *t, int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* ---------------------------------------------------------------- exec */

static __always_inline int check_exec(struct og_container *c, __u32 ns, struct og_scratch *s,
				      struct file *file, int from_exec, int asked_len)
{
	__u8 flags = 0;
	__u8 hook = from_exec ? OG_HOOK_EXEC : OG_HOOK_MMAP;
	struct og_ruleset *rs = bpf_map_lookup_elem(&og_rulesets, &c->ruleset);
	if (!rs) {
		/* The container is governed but its rules are gone: refuse. */
		stat_add(OG_STAT_NO_RULESET);
		emit(s, ns, OG_RULE_NO_RULESET, OG_ACT_DENY, hook, 0, 0, 0);
		return -EPERM;
	}
	long n = resolved(&file->f_path, s->path);
	__u8 m = dfa_match(rs, s->path, n);
	if (m & OG_M_UNKNOWN)
		s->path[0] = 0;
	__u8 ma = 0;
	if (asked_len > 0)
		ma = dfa_match(rs, s->asked, asked_len);
	__u8 any = (m | ma) & ~OG_M_UNKNOWN;

	__u8 rule = 0, act;
	struct task_struct *t = bpf_get_current_task_btf();

	act = c->action[OG_RULE_REVERSE_SHELL];
	if (act && from_exec && (any & OG_M_SHELL)) {
		int sock = is_socket(stdio(t, 0)) || is_socket(stdio(t, 1)) ||
			   is_socket(stdio(t, 2));
		struct og_task *ts = bpf_task_storage_get(&og_tasks, t, 0, 0);
		int interactive = ts && ts->interactive;
		int tty = is_tty(stdio(t, 0));
		if (sock)
			flags |= OG_EV_SOCKET_STDIO;
		if (interactive)
			flags |= OG_EV_INTERACTIVE;
		if (!tty)
			flags |= OG_EV_NO_TTY;
		if (sock || (interactive && !tty))
			rule = OG_RULE_REVERSE_SHELL;
	}
	if (!rule) {
		act = c->action[OG_RULE_DROP_EXEC];
		if (act && unlinked_or_new(c, BPF_CORE_READ(file, f_inode), &flags))
			rule = OG_RULE_DROP_EXEC;
	}
	if (!rule) {
		act = c->action[OG_RULE_EXEC_DENIED];
		if (act && (any & OG_M_DENY))
			rule = OG_RULE_EXEC_DENIED;
	}
	if (!rule) {
		act = c->action[OG_RULE_SHELL];
		if (act && (any & OG_M_SHELL))
			rule = OG_RULE_SHELL;
	}
	if (!rule && from_exec && (c->flags & OG_F_ALLOWLIST)) {
		act = c->action[OG_RULE_EXEC_NOT_ALLOWED];
		if (act && !(any & OG_M_ALLOW))
			rule = OG_RULE_EXEC_NOT_ALLOWED;
	}
	if (!rule && (m & OG_M_UNKNOWN)) {
		/* A path the rules could not be checked against (too long, unreachable
		 * from the task's root): refused where a path rule is enforced. */
		act = c->action[OG_RULE_EXEC_DENIED] | c->action[OG_RULE_SHELL];
		if ((c->flags & OG_F_ALLOWLIST) && c->action[OG_RULE_EXEC_NOT_ALLOWED] > act)
			act = c->action[OG_RULE_EXEC_NOT_ALLOWED];
		if (act)
			rule = OG_RULE_EXEC_DENIED;
	}
	if (!rule)
		return 0;
	if (act == OG_ACT_KILL)
		flags |= OG_EV_KILLED;
	emit(s, ns, rule, act, hook, flags, 0, asked_len > 0 ? 3 : 1);
	return verdict(act);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(og_bprm_check, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	__u32 ns;
	struct og_container *c = current_container(&ns);
	if (!c)
		return 0;
	struct og_scratch *s = scratch();
	if (!s)
		return -EPERM;
	/* interp: the path asked for (the script's interpreter on the second pass). */
	long an = bpf_probe_read_kernel_str(s->asked, OG_PATH_MAX, BPF_CORE_READ(bprm, interp));
	return check_exec(c, ns, s, bprm->file, 1, an > 0 ? an - 1 : 0);
}

SEC("lsm/mmap_file")
int BPF_PROG(og_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	if (ret || !file || !(prot & PROT_EXEC))
		return ret;
	__u32 ns;
	struct og_container *c = current_container(&ns);
	if (!c)
		return 0;
	struct og_scratch *s = scratch();
	if (!s)
		return -EPERM;
	s->asked[0] = 0;
	return check_exec(c, ns, s, file, 0, 0);
}

/* Arguments of an execve by a governed task, before the kernel copies them. */
static __always_inline void capture_argv(const char *const *argv)
{
	__u32 ns;
	struct og_container *c = current_container(&ns);
	if (!c || !argv)
		return;
	struct og_task *ts =
		bpf_task_storage_get(&og_tasks, bpf_get_current_task_btf(), 0,
				     BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ts)
		return;
	__u32 off = 0;
	ts->interactive = 0;
	for (int i = 0; i < OG_ARGS; i++) {
		const char *p = 0;
		if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) || !p)
			break;
		if (off > OG_ARGV_MAX - OG_ARG_MAX)
			break;
		long n = bpf_probe_read_user_str(&ts->argv[off], OG_ARG_MAX, p);
		if (n <= 0)
			break;
		/* An option word with `i` in it (`-i`, `-il`): an interactive shell. */
		if (i > 0 && ts->argv[off] == '-' && ts->argv[(off + 1) & (OG_ARGV_MAX - 1)] != '-') {
			for (int k = 1; k < 8; k++) {
				char ch = ts->argv[(off + k) & (OG_ARGV_MAX - 1)];
				if (!ch)
					break;
				if (ch == 'i')
					ts->interactive = 1;
			}
		}
		off += n;
	}
	ts->argv_len = off;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int og_execve(struct trace_event_raw_sys_enter *ctx)
{
	capture_argv((const char *const *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int og_execveat(struct trace_event_raw_sys_enter *ctx)
{
	capture_argv((const char *const *)ctx->args[2]);
	return 0;
}

/* ---------------------------------------------------------------- open */

/* Is `file` a secret of this container: its inode or a directory above it listed? */
static __always_inline int is_secret(__u32 ns, struct file *file)
{
	struct og_dev_key dk = { .mntns = ns, .dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev) };
	if (!bpf_map_lookup_elem(&og_secret_devs, &dk))
		return 0;
	struct og_inode_key ik = { .mntns = ns, .dev = dk.dev };
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	for (int i = 0; i < DENTRY_DEPTH && d; i++) {
		ik.ino = BPF_CORE_READ(d, d_inode, i_ino);
		if (bpf_map_lookup_elem(&og_secret_inodes, &ik))
			return 1;
		struct dentry *up = BPF_CORE_READ(d, d_parent);
		if (up == d)
			break;
		d = up;
	}
	return 0;
}

/* Is the current process one of the policy's secret_readers (by its exe's path)? */
static __always_inline int is_reader(struct og_container *c, struct og_scratch *s)
{
	if (!bpf_ksym_exists(bpf_get_task_exe_file) || !bpf_ksym_exists(bpf_path_d_path))
		return 0;
	struct og_ruleset *rs = bpf_map_lookup_elem(&og_rulesets, &c->ruleset);
	if (!rs)
		return 0;
	struct file *exe = bpf_get_task_exe_file(bpf_get_current_task_btf());
	if (!exe)
		return 0;
	int n = bpf_path_d_path((struct path *)&exe->f_path, s->path, OG_PATH_MAX);
	bpf_put_file(exe);
	return (dfa_match(rs, s->path, n > 0 ? n - 1 : -1) & (OG_M_READER | OG_M_UNKNOWN)) ==
	       OG_M_READER;
}

/* /proc/PID/environ or /proc/PID/mem of a process other than the caller. */
static __always_inline int other_process_memory(struct file *file, __u32 *target)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (BPF_CORE_READ(inode, i_sb, s_magic) != PROC_SUPER_MAGIC)
		return 0;
	char name[8] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
	int environ = name[0] == 'e' && name[1] == 'n' && name[2] == 'v' && name[3] == 'i' &&
		      name[4] == 'r' && name[5] == 'o' && name[6] == 'n' && name[7] == 0;
	int mem = name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 0;
	if (!environ && !mem)
		return 0;
	struct proc_inode *pi =
		(void *)inode - bpf_core_field_offset(struct proc_inode, vfs_inode);
	struct pid *p = BPF_CORE_READ(pi, pid);
	if (!p)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	if (p == BPF_CORE_READ(t, thread_pid) || p == BPF_CORE_READ(t, group_leader, thread_pid))
		return 0;
	*target = BPF_CORE_READ(p, numbers[0].nr);
	return 1;
}

SEC("lsm/file_open")
int BPF_PROG(og_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	__u32 ns;
	struct og_container *c = current_container(&ns);
	if (!c)
		return 0;
	__u8 act = c->action[OG_RULE_PROC_ACCESS];
	__u32 target = 0;
	if (act && other_process_memory(file, &target)) {
		struct og_scratch *s = scratch();
		if (!s)
			return -EPERM;
		long n = resolved(&file->f_path, s->path);
		if (n < 0)
			s->path[0] = 0;
		emit(s, ns, OG_RULE_PROC_ACCESS, act, OG_HOOK_OPEN, 0, target, 1);
		return verdict(act);
	}
	act = c->action[OG_RULE_SECRET];
	if (act && (c->flags & OG_F_SECRETS) && is_secret(ns, file)) {
		struct og_scratch *s = scratch();
		if (!s)
			return -EPERM;
		if (is_reader(c, s))
			return 0;
		long n = resolved(&file->f_path, s->path);
		if (n < 0)
			s->path[0] = 0;
		emit(s, ns, OG_RULE_SECRET, act, OG_HOOK_OPEN, 0, 0, 1);
		return verdict(act);
	}
	return 0;
}

/* ---------------------------------------------------------------- ptrace */

SEC("lsm/ptrace_access_check")
int BPF_PROG(og_ptrace, struct task_struct *child, unsigned int mode, int ret)
{
	if (ret || !(mode & PTRACE_MODE_ATTACH) || (mode & PTRACE_MODE_NOAUDIT))
		return ret;
	__u32 ns;
	struct og_container *c = current_container(&ns);
	if (!c)
		return 0;
	__u8 act = c->action[OG_RULE_PROC_ACCESS];
	if (!act)
		return 0;
	__u32 target = BPF_CORE_READ(child, tgid);
	if (target == bpf_get_current_pid_tgid() >> 32)
		return 0;
	struct og_scratch *s = scratch();
	if (!s)
		return -EPERM;
	emit(s, ns, OG_RULE_PROC_ACCESS, act, OG_HOOK_PTRACE, 0, target, 0);
	return verdict(act);
}
