#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

// The fault: 0 none, 1 read-only (EROFS for every change), 2 fsync fails
// (EIO). SIGUSR1, SIGHUP and SIGUSR2 set 1, 2 and 0.
static volatile sig_atomic_t fault;
static void onsig(int sig) { fault = sig == SIGUSR1 ? 1 : sig == SIGHUP ? 2 : 0; }

static int dev;
static char **paths; // by node id: the backing path ("" once gone)
static size_t npaths;

static uint64_t node(const char *path) {
	for (size_t i = 1; i < npaths; i++)
		if (strcmp(paths[i], path) == 0) return i;
	paths = realloc(paths, (npaths + 1) * sizeof *paths);
	paths[npaths] = strdup(path);
	return npaths++;
}

static void reply(uint64_t unique, int err, const void *a, size_t alen, const void *b, size_t blen) {
	struct fuse_out_header h = { sizeof h + alen + blen, err, unique };
	struct iovec iov[3] = { { &h, sizeof h }, { (void *)a, alen }, { (void *)b, blen } };
	if (writev(dev, iov, 3) < 0 && errno != ENOENT) perror("faultfs: reply");
}

static void fillattr(struct fuse_attr *a, uint64_t ino, const struct stat *st) {
	memset(a, 0, sizeof *a);
	a->ino = ino; a->size = st->st_size; a->blocks = st->st_blocks;
	a->atime = st->st_atim.tv_sec; a->atimensec = st->st_atim.tv_nsec;
	a->mtime = st->st_mtim.tv_sec; a->mtimensec = st->st_mtim.tv_nsec;
	a->ctime = st->st_ctim.tv_sec; a->ctimensec = st->st_ctim.tv_nsec;
	a->mode = st->st_mode; a->nlink = st->st_nlink; a->uid = st->st_uid; a->gid = st->st_gid;
	a->rdev = st->st_rdev; a->blksize = st->st_blksize;
}

// entry answers a LOOKUP, CREATE or MKDIR of path (with extra after it).
static void entry(uint64_t unique, const char *path, const void *extra, size_t elen) {
	struct stat st;
	if (lstat(path, &st) < 0) { reply(unique, -errno, NULL, 0, NULL, 0); return; }
	struct fuse_entry_out e;
	memset(&e, 0, sizeof e);
	e.nodeid = node(path);
	fillattr(&e.attr, e.nodeid, &st);
	reply(unique, 0, &e, sizeof e, extra, elen);
}

static char *child(uint64_t parent, const char *name) {
	char *p;
	if (asprintf(&p, "%s/%s", paths[parent], name) < 0) exit(1);
	return p;
}

int main(int argc, char **argv) {
	if (argc != 3) { fprintf(stderr, "usage: faultfs BACKING MOUNTPOINT\n"); return 2; }
	struct sigaction sa = { .sa_handler = onsig, .sa_flags = SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL); sigaction(SIGUSR2, &sa, NULL); sigaction(SIGHUP, &sa, NULL);
	paths = calloc(2, sizeof *paths);
	paths[0] = strdup(""); paths[1] = realpath(argv[1], NULL);
	npaths = 2;
	dev = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (dev < 0) { perror("faultfs: /dev/fuse"); return 1; }
	char opts[128];
	snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", dev);
	if (mount("faultfs", argv[2], "fuse.faultfs", MS_NOSUID | MS_NODEV, opts) < 0) { perror("faultfs: mount"); return 1; }
	printf("ready\n");
	fflush(stdout);
	static char buf[(1 << 20) + 4096];
	for (;;) {
		ssize_t n = read(dev, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN) continue;
			if (errno == ENODEV) return 0; // unmounted
			perror("faultfs: read");
			return 1;
		}
		struct fuse_in_header *in = (void *)buf;
		void *arg = buf + sizeof *in;
		uint64_t u = in->unique, id = in->nodeid;
		const char *path = id < npaths ? paths[id] : "";
		int ro = fault == 1;
		switch (in->opcode) {
		case FUSE_INIT: {
			struct fuse_init_in *ii = arg;
			struct fuse_init_out o;
			memset(&o, 0, sizeof o);
			o.major = FUSE_KERNEL_VERSION;
			o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
			o.max_readahead = ii->max_readahead;
			o.max_write = 1 << 20;
			o.max_pages = 256;
			o.flags = FUSE_MAX_PAGES | FUSE_BIG_WRITES;
			o.time_gran = 1;
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_DESTROY: reply(u, 0, NULL, 0, NULL, 0); return 0;
		case FUSE_FORGET: case FUSE_BATCH_FORGET: case FUSE_INTERRUPT: break; // no reply
		case FUSE_LOOKUP: { char *p = child(id, arg); entry(u, p, NULL, 0); free(p); break; }
		case FUSE_GETATTR: case FUSE_SETATTR: {
			if (in->opcode == FUSE_SETATTR) {
				struct fuse_setattr_in *s = arg;
				int err = 0;
				if (ro && (s->valid & (FATTR_SIZE | FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_ATIME | FATTR_MTIME))) err = EROFS;
				if (!err && (s->valid & FATTR_SIZE) && ((s->valid & FATTR_FH) ? ftruncate(s->fh, s->size) : truncate(path, s->size)) < 0) err = errno;
				if (!err && (s->valid & FATTR_MODE) && chmod(path, s->mode & 07777) < 0) err = errno;
				if (!err && (s->valid & (FATTR_UID | FATTR_GID)) &&
				    lchown(path, (s->valid & FATTR_UID) ? s->uid : (uid_t)-1, (s->valid & FATTR_GID) ? s->gid : (gid_t)-1) < 0) err = errno;
				if (err) { reply(u, -err, NULL, 0, NULL, 0); break; }
			}
			struct stat st;
			if (lstat(path, &st) < 0) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			struct fuse_attr_out o;
			memset(&o, 0, sizeof o);
			fillattr(&o.attr, id, &st);
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_OPEN: case FUSE_OPENDIR: {
			struct fuse_open_in *oi = arg;
			int fl = in->opcode == FUSE_OPENDIR ? O_RDONLY | O_DIRECTORY : oi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY);
			if (ro && ((fl & O_ACCMODE) != O_RDONLY || (fl & O_TRUNC))) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			int fd = open(path, fl | O_CLOEXEC);
			if (fd < 0) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			struct fuse_open_out o = { .fh = fd };
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_CREATE: {
			struct fuse_create_in *ci = arg;
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *p = child(id, (char *)(ci + 1));
			int fd = open(p, (ci->flags | O_CREAT | O_CLOEXEC) & ~O_NOCTTY, ci->mode & ~ci->umask);
			if (fd < 0) { reply(u, -errno, NULL, 0, NULL, 0); free(p); break; }
			struct fuse_open_out o = { .fh = fd };
			entry(u, p, &o, sizeof o);
			free(p);
			break;
		}
		case FUSE_MKDIR: {
			struct fuse_mkdir_in *mi = arg;
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *p = child(id, (char *)(mi + 1));
			if (mkdir(p, mi->mode & ~mi->umask) < 0) reply(u, -errno, NULL, 0, NULL, 0);
			else entry(u, p, NULL, 0);
			free(p);
			break;
		}
		case FUSE_UNLINK: case FUSE_RMDIR: {
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *p = child(id, arg);
			int r = in->opcode == FUSE_UNLINK ? unlink(p) : rmdir(p);
			reply(u, r < 0 ? -errno : 0, NULL, 0, NULL, 0);
			free(p);
			break;
		}
		case FUSE_RENAME: case FUSE_RENAME2: {
			uint64_t newdir;
			unsigned flags = 0;
			char *names;
			if (in->opcode == FUSE_RENAME) { struct fuse_rename_in *r = arg; newdir = r->newdir; names = (char *)(r + 1); }
			else { struct fuse_rename2_in *r = arg; newdir = r->newdir; flags = r->flags; names = (char *)(r + 1); }
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			char *from = child(id, names), *to = child(newdir, names + strlen(names) + 1);
			if (renameat2(AT_FDCWD, from, AT_FDCWD, to, flags) < 0) reply(u, -errno, NULL, 0, NULL, 0);
			else {
				for (size_t i = 2; i < npaths; i++) if (strcmp(paths[i], to) == 0) paths[i][0] = 0;
				for (size_t i = 2; i < npaths; i++) if (strcmp(paths[i], from) == 0) { free(paths[i]); paths[i] = strdup(to); }
				reply(u, 0, NULL, 0, NULL, 0);
			}
			free(from); free(to);
			break;
		}
		case FUSE_READ: {
			struct fuse_read_in *r = arg;
			static char data[1 << 20];
			ssize_t got = pread(r->fh, data, r->size < sizeof data ? r->size : sizeof data, r->offset);
			reply(u, got < 0 ? -errno : 0, data, got < 0 ? 0 : got, NULL, 0);
			break;
		}
		case FUSE_WRITE: {
			struct fuse_write_in *w = arg;
			if (ro) { reply(u, -EROFS, NULL, 0, NULL, 0); break; }
			ssize_t put = pwrite(w->fh, (char *)(w + 1), w->size, w->offset);
			struct fuse_write_out o = { .size = put < 0 ? 0 : put };
			reply(u, put < 0 ? -errno : 0, &o, sizeof o, NULL, 0);
			break;
		}
		case FUSE_FSYNC: case FUSE_FSYNCDIR: {
			struct fuse_fsync_in *f = arg;
			if (fault == 2) { reply(u, -EIO, NULL, 0, NULL, 0); break; }
			reply(u, fsync(f->fh) < 0 ? -errno : 0, NULL, 0, NULL, 0);
			break;
		}
		case FUSE_FLUSH: reply(u, 0, NULL, 0, NULL, 0); break;
		case FUSE_RELEASE: case FUSE_RELEASEDIR: { struct fuse_release_in *r = arg; close(r->fh); reply(u, 0, NULL, 0, NULL, 0); break; }
		case FUSE_READDIR: {
			struct fuse_read_in *r = arg;
			static char out[1 << 16];
			size_t len = 0, max = r->size < sizeof out ? r->size : sizeof out;
			DIR *d = opendir(path);
			if (!d) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			uint64_t i = 0;
			for (struct dirent *de; (de = readdir(d)); i++) {
				if (i < r->offset) continue;
				size_t nl = strlen(de->d_name), sz = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + nl);
				if (len + sz > max) break;
				struct fuse_dirent *fd = (void *)(out + len);
				memset(fd, 0, sz);
				fd->ino = de->d_ino; fd->off = i + 1; fd->namelen = nl; fd->type = de->d_type;
				memcpy(fd->name, de->d_name, nl);
				len += sz;
			}
			closedir(d);
			reply(u, 0, out, len, NULL, 0);
			break;
		}
		case FUSE_STATFS: {
			struct statvfs sv;
			if (statvfs(paths[1], &sv) < 0) { reply(u, -errno, NULL, 0, NULL, 0); break; }
			struct fuse_statfs_out o;
			memset(&o, 0, sizeof o);
			o.st.blocks = sv.f_blocks; o.st.bfree = sv.f_bfree; o.st.bavail = sv.f_bavail; o.st.files = sv.f_files;
			o.st.ffree = sv.f_ffree; o.st.bsize = sv.f_bsize; o.st.namelen = sv.f_namemax; o.st.frsize = sv.f_frsize;
			reply(u, 0, &o, sizeof o, NULL, 0);
			break;
		}
		default: reply(u, -ENOSYS, NULL, 0, NULL, 0);
		}
	}
}
