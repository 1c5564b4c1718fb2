package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// A new repository is encrypted, and nothing a reader of the bucket gets
// holds a file's name or any 48-byte run of its content.
func TestEncryptedLeaksNoPlaintext(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	if !r.Encrypted() {
		t.Fatal("a new repository is not encrypted")
	}
	const marker = "CONVEYOR-SECRET-MARKER-7f3a"
	random := make([]byte, 3<<20)
	rand.New(rand.NewSource(5)).Read(random)
	text := bytes.Repeat([]byte("log line with "+marker+" inside\n"), 20000)
	writeFile(t, filepath.Join(b.src, "dir-"+marker, "file-"+marker+".log"), text, 0o644, time.Now())
	writeFile(t, filepath.Join(b.src, "random.bin"), random, 0o644, time.Now())
	writeFile(t, filepath.Join(b.src, "small"), []byte(marker), 0o644, time.Now())
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := r.list(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]bool{}
	for i := 0; i+48 <= len(random); i += 4096 {
		runs[string(random[i:i+48])] = true
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[strings.SplitN(o.Name, "/", 2)[0]] = true
		body, err := r.get(ctx, o.Name)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(body, []byte(marker)) {
			t.Errorf("%s holds the marker in clear", o.Name)
		}
		for i := 0; i+48 <= len(body); i++ {
			if runs[string(body[i:i+48])] {
				t.Errorf("%s holds a 48-byte run of random.bin at %d", o.Name, i)
				break
			}
		}
	}
	for _, k := range []string{"config", "keys", "packs", "index", "snapshots"} {
		if !kinds[k] {
			t.Errorf("no %s object was checked (%v)", k, kinds)
		}
	}
	restoreAndCompare(t, r, s.ID, b.src)
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
}

// The wrong password, or none, is a clear error; the right one opens.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	for _, key := range []KeyWrapper{&Password{secret: []byte("not it"), logN: 10}, nil} {
		_, err := Open(ctx, b.srv.Client, Config{Bucket: b.bucket, Source: b.src, Key: key})
		if !errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), "set snapshot.password_file or CONVEYOR_SNAPSHOT_PASSWORD") {
			t.Errorf("key %v: %v, want ErrWrongKey", key, err)
		}
	}
	again, err := Open(ctx, b.srv.Client, Config{Bucket: b.bucket, Source: b.src, Key: testKey()})
	if err != nil || again.ID() != r.ID() {
		t.Fatalf("right password: %v", err)
	}
}

// Open refuses to create a repository it cannot encrypt.
func TestNewRepositoryNeedsAKey(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	_, err := Open(context.Background(), b.srv.Client, Config{Bucket: b.bucket, Prefix: "other/", Source: b.src})
	if err == nil || !strings.Contains(err.Error(), "snapshot.password_file") {
		t.Fatalf("open without a key: %v", err)
	}
}

// A flipped byte in any kind of object is found by verify, and by restore
// when restore reads it (a pack's table is not read by restore: the index
// says where blobs are, and each blob authenticates on its own).
func TestEncryptedFlipDetected(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"data blob", "tree blob", "pack table", "index", "snapshot"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r, b := setup(t)
			ctx := context.Background()
			makeTree(t, b.src, 20, 1<<20)
			s, err := r.Create(ctx, snapshot.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			x, err := r.loadIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tid, _ := parseID(s.Tree)
			tloc, _ := x.lookup(tid)
			var key string
			at := 0
			switch kind {
			case "data blob", "pack table":
				for p, es := range x.packs {
					for _, e := range es {
						if e.Type == blobData {
							key, at = "packs/"+p.String(), int(e.Offset)+int(e.Length)/2
							if kind == "pack table" {
								at = -20 // inside the sealed table
							}
						}
					}
				}
			case "tree blob":
				key, at = "packs/"+tloc.Pack.String(), int(tloc.Offset)+int(tloc.Length)/2
			case "index":
				key, at = x.files[0], 40
			case "snapshot":
				key, at = "snapshots/"+s.ID, 40
			}
			body, _ := r.get(ctx, key)
			if at < 0 {
				at += len(body)
			}
			flipByte(t, b, r.key(key), at)
			rep, err := r.Verify(ctx, "", nil)
			if !errors.Is(err, snapshot.ErrCorrupt) {
				t.Fatalf("verify after a flip in %s (%s): %+v %v, want ErrCorrupt", kind, key, rep, err)
			}
			if !strings.Contains(err.Error(), key) && !strings.Contains(err.Error(), "blob") {
				t.Errorf("verify does not name the object: %v", err)
			}
			err = r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: filepath.Join(t.TempDir(), "r")})
			if kind == "pack table" {
				if err != nil {
					t.Fatalf("restore reads no table, yet: %v", err)
				}
				return
			}
			if !errors.Is(err, snapshot.ErrCorrupt) {
				t.Fatalf("restore after a flip in %s: %v, want ErrCorrupt", kind, err)
			}
		})
	}
}

// putV1Config writes the config of a repository created before
// encryption (version 1) under cfg's prefix, and returns cfg.
func putV1Config(t *testing.T, b bundle, cfg Config) Config {
	t.Helper()
	v1 := `{"version": 1, "id": "0123456789abcdef", "created": "2026-01-01T00:00:00Z", "chunker": {"min": 262144, "avg": 1048576, "max": 4194304}}`
	pre := &Repo{s3: b.srv.Client, cfg: cfg.WithDefaults()}
	if err := pre.put(context.Background(), "config", []byte(v1), true); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A repository created before encryption (version 1) is read and written
// as it is, with or without a password configured; the config of an
// encrypted one cannot be rewritten to pass it off as unencrypted.
func TestUnencryptedRepositoryStillWorks(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := context.Background()
	cfg := putV1Config(t, b, Config{Bucket: b.bucket, Prefix: "old/", Source: b.src, PackSize: 1 << 20})
	makeTree(t, b.src, 10, 1<<20)
	for _, key := range []KeyWrapper{nil, testKey()} {
		cfg.Key = key
		r, err := Open(ctx, b.srv.Client, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.Encrypted() {
			t.Fatal("a version 1 repository opened as encrypted")
		}
		s, err := r.Create(ctx, snapshot.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		restoreAndCompare(t, r, s.ID, b.src)
		if _, err := r.Verify(ctx, "", nil); err != nil {
			t.Fatal(err)
		}
		body, _ := r.get(ctx, "snapshots/"+s.ID)
		if !bytes.HasPrefix(body, []byte("{")) {
			t.Fatalf("a version 1 repository's snapshot is not plain JSON: %q", body[:20])
		}
	}

	// An encrypted repository whose config says version 1.
	enc := Config{Bucket: b.bucket, Prefix: "new/", Source: b.src, Key: testKey()}
	r, err := Open(ctx, b.srv.Client, enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.delIf(ctx, "config", ""); err != nil {
		t.Fatal(err)
	}
	putV1Config(t, b, enc)
	if _, err := Open(ctx, b.srv.Client, enc); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("downgraded config: %v, want ErrCorrupt", err)
	}
}

// Keys derived from one master key: IDs are keyed (another key names the
// same content differently), and a sealed object opens only under its
// key and kind.
func TestSealer(t *testing.T) {
	a, _ := newSealer(newMasterKey())
	b, _ := newSealer(newMasterKey())
	data := []byte("the same content")
	if a.blobID(data) == b.blobID(data) || a.blobID(data) == hashOf(data) || a.blobID(data) != a.blobID(data) {
		t.Fatal("blob IDs are not keyed")
	}
	s1, s2 := a.seal(nil, data, adBlob), a.seal(nil, data, adBlob)
	if bytes.Equal(s1, s2) {
		t.Fatal("two seals of one plaintext are equal: nonce reused")
	}
	if got, err := a.open(nil, s1, adBlob); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := b.open(nil, s1, adBlob); !errors.Is(err, errAuth) {
		t.Fatalf("another key opens it: %v", err)
	}
	if _, err := a.open(nil, s1, adSnapshot); !errors.Is(err, errAuth) {
		t.Fatalf("a blob opens as a snapshot: %v", err)
	}
}

// Blobs of a version 3 repository are sealed with their ID as nonce (16
// bytes over their stored plaintext); a version 2 repository keeps
// writing blobs with a random nonce before them (40 bytes over), and
// both create, prune (copying sealed blobs into new packs), verify and
// restore.
func TestBlobNonceVersions(t *testing.T) {
	t.Parallel()
	for _, v := range []int{versionEncrypted, versionIDNonce, versionKeyedChunker} {
		t.Run(fmt.Sprintf("version %d", v), func(t *testing.T) {
			t.Parallel()
			r, b := setup(t)
			ctx := context.Background()
			if r.rc.Version != versionKeyedChunker {
				t.Fatalf("a new repository is version %d, want %d", r.rc.Version, versionKeyedChunker)
			}
			if v != versionKeyedChunker {
				// A repository as version v created it: its config
				// says v, nothing written yet.
				rc := r.rc
				rc.Version = v
				body, _ := json.Marshal(rc)
				if err := r.delIf(ctx, "config", ""); err != nil {
					t.Fatal(err)
				}
				if err := r.put(ctx, "config", body, true); err != nil {
					t.Fatal(err)
				}
				var err error
				if r, err = Open(ctx, b.srv.Client, r.cfg); err != nil {
					t.Fatal(err)
				}
				if r.rc.Version != v || r.sealer.idNonce != (v >= versionIDNonce) || *r.gear != gear {
					t.Fatalf("reopened as version %d, id nonces %v, keyed chunker %v", r.rc.Version, r.sealer.idNonce, *r.gear != gear)
				}
			}
			makeTree(t, b.src, 200, 3<<20)
			if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 200; i += 2 {
				if err := os.Remove(filepath.Join(b.src, "small", fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%05d.txt", i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Remove(filepath.Join(b.src, "bin", "random.bin")); err != nil {
				t.Fatal(err)
			}
			s2, err := r.Create(ctx, snapshot.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1})
			if err != nil {
				t.Fatal(err)
			}
			if rep.PacksRepacked == 0 || rep.PacksDeleted == 0 {
				t.Fatalf("prune repacked %d packs and deleted %d: the test needs both", rep.PacksRepacked, rep.PacksDeleted)
			}
			if _, err := r.Verify(ctx, "", nil); err != nil {
				t.Fatal(err)
			}
			restoreAndCompare(t, r, s2.ID, b.src)

			x, err := r.loadIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := map[int]uint32{versionEncrypted: 40, versionIDNonce: 16, versionKeyedChunker: 16}[v]
			raw := 0
			x.each(func(id ID, s slot) {
				if s.compressed {
					return
				}
				raw++
				if s.length != s.raw+want {
					t.Errorf("blob %s: %d bytes stored for %d, want %d over", id, s.length, s.raw, want)
				}
			})
			if raw == 0 {
				t.Fatal("no blob stored uncompressed: nothing checked")
			}

			// Packs end with the table format of their version, and
			// repair rebuilds the index from those tables.
			packs, err := r.list(ctx, "packs/")
			if err != nil || len(packs) == 0 {
				t.Fatalf("%d packs: %v", len(packs), err)
			}
			magic := map[int]string{versionEncrypted: packMagicSealed, versionIDNonce: packMagicCompact, versionKeyedChunker: packMagicCompact}[v]
			for _, o := range packs {
				body, err := r.get(ctx, o.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasSuffix(body, []byte(magic)) {
					t.Errorf("%s ends with %q, want %q", o.Name, body[len(body)-8:], magic)
				}
			}
			if rep, err := r.Repair(ctx); err != nil || rep.Lost() || rep.LostBlobs != 0 {
				t.Fatalf("repair of a sound repository: %+v, %v", rep, err)
			}
			if _, err := r.Verify(ctx, "", nil); err != nil {
				t.Fatal(err)
			}
			restoreAndCompare(t, r, s2.ID, b.src)
		})
	}
}

// A blob sealed with its ID as nonce opens under that ID only, and the
// same plaintext seals to the same bytes.
func TestSealBlobWithIDNonce(t *testing.T) {
	s, _ := newSealer(newMasterKey())
	s.idNonce = true
	a, b := []byte("one blob's content"), []byte("another blob's content")
	ia, ib := s.blobID(a), s.blobID(b)
	sa := s.sealBlob(nil, ia, a)
	if len(sa) != len(a)+16 || bytes.Contains(sa, a) {
		t.Fatalf("sealed %d bytes into %d", len(a), len(sa))
	}
	if !bytes.Equal(sa, s.sealBlob(nil, ia, a)) {
		t.Fatal("one plaintext sealed twice differs")
	}
	if got, err := s.openBlob(ia, bytes.Clone(sa)); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := s.openBlob(ib, bytes.Clone(sa)); !errors.Is(err, errAuth) {
		t.Fatalf("blob a opened as blob b: %v", err)
	}
	inPlace := append(make([]byte, 0, len(b)+16), b...)
	if got := s.sealBlobInPlace(inPlace, ib); !bytes.Equal(got, s.sealBlob(nil, ib, b)) {
		t.Fatal("sealing in place differs from sealing into a new buffer")
	}
	if _, err := s.openBlob(ia, s.seal(nil, a, adBlob)); !errors.Is(err, errAuth) {
		t.Fatalf("a blob with a random nonce opened as an ID-nonce one: %v", err)
	}
}
