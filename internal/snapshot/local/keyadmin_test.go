package local

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

func password(s string) *Password { return &Password{secret: []byte(s), logN: 10} }

// A password is changed by adding a key and removing the old one: the
// snapshots stay readable with the new one and no longer with the old;
// the key a command opened the repository with is never removed, and a
// removal by a key that another process removed meanwhile does nothing.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	makeTree(t, b.src, 20, 1<<20)
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	open := func(k KeyWrapper) (*Repo, error) {
		return Open(ctx, b.srv.Client, Config{Bucket: b.bucket, Source: b.src, PackSize: 1 << 20, Key: k})
	}
	keys, err := r.Keys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Current || keys[0].Kind != "password" {
		t.Fatalf("keys of a new repository: %+v, %v", keys, err)
	}
	first := keys[0].ID

	second, err := r.AddKey(ctx, password("second password"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := open(password("second password"))
	if err != nil {
		t.Fatalf("open with the added password: %v", err)
	}
	restoreAndCompare(t, r2, s.ID, b.src)
	keys, _ = r2.Keys(ctx)
	if len(keys) != 2 || keys[0].ID != first || keys[1].ID != second || keys[0].Current || !keys[1].Current {
		t.Fatalf("keys seen by the second password: %+v", keys)
	}
	if _, err := r2.RemoveKey(ctx, second[:6]); err == nil || !strings.Contains(err.Error(), "opened the repository with") {
		t.Fatalf("removing the key in use: %v", err)
	}
	if _, err := r2.RemoveKey(ctx, "nosuchkey"); err == nil || !strings.Contains(err.Error(), "key list") {
		t.Fatalf("removing a key that is not there: %v", err)
	}
	if got, err := r2.RemoveKey(ctx, first[:8]); err != nil || got != first {
		t.Fatalf("remove the first key by a prefix: %q, %v", got, err)
	}
	if _, err := open(testKey()); !errors.Is(err, snapshot.ErrWrongKey) {
		t.Fatalf("open with the removed password: %v, want ErrWrongKey", err)
	}

	// A password change: one call.
	added, removed, err := r2.ReplaceKey(ctx, password("third password"))
	if err != nil || removed != second {
		t.Fatalf("replace: added %q removed %q, %v", added, removed, err)
	}
	keys, _ = r2.Keys(ctx)
	if len(keys) != 1 || keys[0].ID != added || !keys[0].Current {
		t.Fatalf("keys after the change: %+v", keys)
	}
	if _, err := open(password("second password")); !errors.Is(err, snapshot.ErrWrongKey) {
		t.Fatalf("open with the replaced password: %v, want ErrWrongKey", err)
	}
	r3, err := open(password("third password"))
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, r3, s.ID, b.src)
	// The Repo that changed its key goes on with the new one.
	if _, err := r2.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The step between the two (saving the new password) runs with the
	// new key stored and the old one still there; when it fails, both
	// keep opening the repository.
	var sawBoth bool
	kept, _, err := r3.ReplaceKeyThen(ctx, password("saved nowhere"), func(added string) error {
		_, errNew := open(password("saved nowhere"))
		_, errOld := open(password("third password"))
		sawBoth = errNew == nil && errOld == nil
		return errors.New("disk full")
	})
	if err == nil || !strings.Contains(err.Error(), "old one kept") || !strings.Contains(err.Error(), "disk full") || !sawBoth {
		t.Fatalf("replace whose step between fails: %v (both keys open meanwhile: %v)", err, sawBoth)
	}
	for _, pw := range []string{"saved nowhere", "third password"} {
		if _, err := open(password(pw)); err != nil {
			t.Fatalf("after the failed step, open with %q: %v", pw, err)
		}
	}
	if _, err := r3.RemoveKey(ctx, kept); err != nil {
		t.Fatal(err)
	}

	// Two processes opened with the same key: one replaces it, the
	// other's removal (of a key the first just added, say) is refused.
	if _, err := r3.AddKey(ctx, password("fourth password")); err != nil {
		t.Fatal(err)
	}
	rA, _ := open(password("third password"))
	rB, _ := open(password("third password"))
	newest, _, err := rA.ReplaceKey(ctx, password("fifth password"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rB.RemoveKey(ctx, newest); err == nil || !strings.Contains(err.Error(), "removed meanwhile") {
		t.Fatalf("removal by a key removed meanwhile: %v", err)
	}
	if _, _, err := rB.ReplaceKey(ctx, password("sixth password")); err == nil || !strings.Contains(err.Error(), "removed meanwhile") {
		t.Fatalf("replace by a key removed meanwhile: %v", err)
	}
	keys, _ = rA.Keys(ctx)
	if len(keys) != 2 {
		t.Fatalf("keys after the race: %+v, want the fourth and fifth passwords' keys", keys)
	}
	for _, pw := range []string{"fourth password", "fifth password"} {
		if _, err := open(password(pw)); err != nil {
			t.Fatalf("open with %s: %v", pw, err)
		}
	}
}

// brokenWrapper wraps but cannot unwrap: a KMS key the role may encrypt
// with but not decrypt with.
type brokenWrapper struct{}

func (brokenWrapper) Kind() string { return "password" }
func (brokenWrapper) Wrap(context.Context, string, []byte) (json.RawMessage, error) {
	return json.RawMessage(`{"opaque": true}`), nil
}
func (brokenWrapper) Unwrap(context.Context, string, json.RawMessage) ([]byte, error) {
	return nil, errors.New("AccessDeniedException: not allowed to decrypt")
}

// A key that cannot open what it wrapped is not stored; an unencrypted
// repository has no keys to manage.
func TestAddKeyChecksIt(t *testing.T) {
	t.Parallel()
	r, b := setup(t)
	ctx := context.Background()
	if _, err := r.Create(ctx, snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddKey(ctx, brokenWrapper{}); err == nil || !strings.Contains(err.Error(), "not allowed to decrypt") || !strings.Contains(err.Error(), "not added") {
		t.Fatalf("adding a key that cannot unwrap: %v", err)
	}
	if _, _, err := r.ReplaceKey(ctx, brokenWrapper{}); err == nil || !strings.Contains(err.Error(), "not added") {
		t.Fatalf("replacing by a key that cannot unwrap: %v", err)
	}
	if keys, err := r.Keys(ctx); err != nil || len(keys) != 1 || !keys[0].Current {
		t.Fatalf("keys after the refusals: %+v, %v", keys, err)
	}
	if _, err := Open(ctx, b.srv.Client, Config{Bucket: b.bucket, Source: b.src, Key: testKey()}); err != nil {
		t.Fatalf("the original password after the refusals: %v", err)
	}

	cfg := putV1Config(t, b, Config{Bucket: b.bucket, Prefix: "plain/", Source: b.src})
	plain, err := Open(ctx, b.srv.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.AddKey(ctx, testKey()); !errors.Is(err, errNotEncrypted) {
		t.Fatalf("add a key to an unencrypted repository: %v", err)
	}
	if _, err := plain.Keys(ctx); !errors.Is(err, errNotEncrypted) {
		t.Fatalf("keys of an unencrypted repository: %v", err)
	}
}
