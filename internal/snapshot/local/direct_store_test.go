package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

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
