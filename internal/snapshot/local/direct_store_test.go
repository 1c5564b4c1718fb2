package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Through the embedded server's in-process Direct (as `conveyor up` and
// `conveyor snapshot` reach it when they run the server), a repository
// behaves as through HTTP: snapshots round trip and prune, locks exclude,
// conditional writes hold, and a missing, damaged or cut-short pack is
// named, which needs the engine's errors (NoSuchKey, InvalidRange) in the
// SDK's shape.
func TestDirectStore(t *testing.T) {
	t.Parallel()
	r, b := setupOver(t, true)
	if _, ok := r.s3.(*s3.Client); ok {
		t.Fatal("setup: the repository goes through HTTP")
	}
	ctx := context.Background()
	makeTree(t, b.src, 50, 3<<20)
	s1, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s1.ID, b.src)
	writeFile(t, filepath.Join(b.src, "new.bin"), bytes.Repeat([]byte("n"), 2<<20), 0o644, time.Unix(1e9, 0))
	s2, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, snapshot.Policy{KeepLast: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r, s2.ID, b.src)

	// Locks: an exclusive one keeps a create out.
	excl, err := r.lock(ctx, "prune", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.lock(ctx, "create", false); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("create beside a prune: %v, want ErrLocked", err)
	}
	excl.release()
	// A conditional create of an existing object fails as over HTTP.
	if err := r.put(ctx, "config", []byte("{}"), true); !errors.Is(err, errExists) {
		t.Fatalf("config written over: %v, want errExists", err)
	}

	// A data pack cut short, then missing.
	x, _ := r.loadIndex(ctx)
	tid, _ := parseID(s2.Tree)
	treeLoc, _ := x.lookup(tid)
	objs, _ := r.list(ctx, "packs/")
	var victim string
	for _, o := range objs {
		if o.Name != "packs/"+treeLoc.Pack.String() && o.Size > 1<<20 {
			victim = o.Name
		}
	}
	if victim == "" {
		t.Fatalf("setup: no data pack among %d", len(objs))
	}
	p := filepath.Join(b.srv.DataDir, b.bucket, r.key(victim))
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	err = r.Restore(ctx, s2.ID, snapshot.RestoreOptions{Target: filepath.Join(t.TempDir(), "r")})
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("restore with a pack cut short: %v; want ErrCorrupt naming %s", err, victim)
	}
	if _, err := b.srv.Direct.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.bucket, Key: aws.String(r.key(victim))}); err != nil {
		t.Fatal(err)
	}
	_, err = r.Verify(ctx, s2.ID, nil)
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), victim+" is missing") {
		t.Fatalf("verify with a pack missing: %v; want it named", err)
	}
}

// TestPacksCarryTheirCRC32C: every pack is stored with a CRC32C that the
// store verified on the way in and that an SDK reading the pack checks,
// through either path; through Direct, packs skip the MD5 (their ETag is
// derived from the CRC32C), while the objects whose ETags conditional
// writes compare (config, keys, index, snapshots, locks) keep MD5s.
func TestPacksCarryTheirCRC32C(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		r, b := setupOver(t, direct)
		ctx := context.Background()
		makeTree(t, b.src, 20, 2<<20)
		if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		objs, err := r.list(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		packs := 0
		for _, o := range objs {
			key := r.key(o.Name)
			get, err := b.srv.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &key, ChecksumMode: types.ChecksumModeEnabled})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(get.Body)
			get.Body.Close()
			if err != nil {
				t.Fatalf("direct=%v %s: %v", direct, o.Name, err)
			}
			etag := strings.Trim(aws.ToString(get.ETag), `"`)
			if !strings.HasPrefix(o.Name, "packs/") {
				if len(etag) != 32 {
					t.Errorf("direct=%v %s: ETag %s, want an MD5", direct, o.Name, etag)
				}
				continue
			}
			packs++
			var c [4]byte
			binary.BigEndian.PutUint32(c[:], crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
			sum := base64.StdEncoding.EncodeToString(c[:])
			if aws.ToString(get.ChecksumCRC32C) != sum {
				t.Errorf("direct=%v %s: stored CRC32C %q, body's %q", direct, o.Name, aws.ToString(get.ChecksumCRC32C), sum)
			}
			if direct && etag != "CRC32C-"+sum {
				t.Errorf("direct %s: ETag %s, want one derived from its CRC32C", o.Name, etag)
			}
		}
		if packs < 2 {
			t.Fatalf("direct=%v: setup made %d packs", direct, packs)
		}
	}
}
