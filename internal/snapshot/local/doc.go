// Package local is the snapshot driver that keeps incremental,
// deduplicated snapshots of a directory in an S3 bucket, under a prefix:
//
//	config              repository id, version, chunker parameters
//	keys/<id>           the master key, wrapped by a password (key.go) or
//	                    by AWS KMS (kmskey)
//	packs/<hash>        several MiB of blobs (zstd or raw) and their table,
//	                    stored with their CRC32C (see putPack)
//	index/<hash>        which blob lives in which pack, at which offset
//	snapshots/<name>    one JSON object per snapshot: time, tree, stats
//	locks/<nonce>       who is working on the repository (see lock.go)
//
// The bucket is reached through an ObjectStore: an *s3.Client, or the
// embedded server's in-process s3server.Direct where the process runs the
// server itself. The master key never changes; keys/ objects are added,
// removed and replaced (a password change, a move to KMS) by keyadmin.go.
//
// Version 2, 3 and 4 repositories are encrypted (crypto.go): blobs, pack
// tables, index and snapshot objects sealed with XChaCha20-Poly1305, blob
// IDs a keyed BLAKE3; version 3 seals a blob with its ID as nonce instead
// of a random one stored before it, and lists blobs in pack tables and
// index objects as compact entries (entry.go): 36 to 40 bytes where
// versions 1 and 2 take 46. Version 4 (new repositories) adds a chunker
// keyed by the master key (keyedGear in cdc.go): cut points differ from
// one repository to the next. Version 1 ones are read and written
// unencrypted.
//
// Blobs are file chunks cut by FastCDC and the snapshot's tree (entries
// with type, mode, mtime, size, inode, chunk list and, from tree version
// 2, the root ".", owner, group, xattrs, hard links, holes, FIFOs and
// devices), each addressed by the (keyed) BLAKE3 hash of its plaintext.
// Versions 1 and 2 keep a snapshot's whole tree in one blob; version 3
// (treedir.go) keeps a blob per directory, naming its subdirectories'
// blobs, so an unchanged directory is stored once for all snapshots.
// Create walks the source a directory at a time (walk.go) beside the
// parent snapshot's same directory, so its memory follows the widest
// directories rather than the volume; tree blobs go to packs of their
// own, which the next Create, prune, verify and repair read by ranges a
// directory at a time (prune and verify read a directory shared by
// several snapshots once). Restore (restore_stream.go) checks the tree
// whole, a directory at a time, before writing anything, then walks it
// again and restores its files a batch at a time while the next batch is
// planned, so its memory follows a batch, not the snapshot. The bulk of
// large files goes straight to the disk with O_DIRECT (direct.go), each
// chunk decrypted or decompressed at its file offset's page phase so
// that it needs no copy; an in-place restore syncs the filesystem before
// its swap.
//
// The index (index.go) is loaded in bulk into sorted runs of 52 bytes a
// blob, mapped outside the Go heap when large (index_mem.go); prune and
// verify mark blobs in a bitset over those runs. The chunkers' windows
// and the pack buffers are mapped outside the heap too, from a pool that
// is never unmapped (bigbuf.go), and the collector keeps half its
// headroom while an operation runs (gc.go).
// Objects are written in the order packs, index, snapshot, so an
// interrupted run leaves only packs that nothing references, which Prune
// removes once they are older than a margin.
//
// Locks (lock.go) fence: a holder's work runs under a context its lock
// keeper cancels when a refresh (a conditional write) fails for too long
// or finds the lock gone, and each dependent write checks it first;
// staleness is judged by the store's LastModified. Repair rebuilds the
// index from the packs; Restore reaches every path through directory
// descriptors without following symlinks. It is not a general backup
// tool: one source directory.
//
// Test seam: every write step of creating a repository, create, prune and
// repair is a named crash point (crash.go, listed by CrashPoints). With
// CONVEYOR_SNAPSHOT_CRASH_AT=<point>[:<nth>] in its environment, read once
// at start, the process kills itself with SIGKILL right after passing that
// point the nth time, so that tests can show that verify is clean after a
// kill at any of them. Unset, a point costs a pointer comparison.
package local
