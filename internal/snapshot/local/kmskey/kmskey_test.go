package kmskey_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	"github.com/conveyorhq/conveyor/internal/snapshot/local"
	"github.com/conveyorhq/conveyor/internal/snapshot/local/kmskey"
	"github.com/conveyorhq/conveyor/internal/snapshot/local/kmskey/kmstest"
)

const (
	keyA = "1234abcd-12ab-34cd-56ef-1234567890ab"
	keyB = "0987dcba-09fe-87dc-65ba-ab0987654321"
)

func master(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// Wrap and Unwrap go through KMS Encrypt and Decrypt with the repository
// in the encryption context; the key may be named by ID, ARN or alias;
// the key object holds no plaintext.
func TestWrapUnwrap(t *testing.T) {
	t.Parallel()
	kms := kmstest.New(t, kmstest.Key{ID: keyA, Alias: "alias/conveyor-snapshots"})
	ctx := context.Background()
	m := master(t)
	stored, err := kmskey.New(kms.Client(), "alias/conveyor-snapshots").Wrap(ctx, "repo-1", m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, m) || !bytes.Contains(stored, []byte(kmstest.ARN(keyA))) {
		t.Fatalf("stored key: %s; want the key's ARN and no plaintext", stored)
	}
	for _, name := range []string{keyA, kmstest.ARN(keyA), "alias/conveyor-snapshots"} {
		got, err := kmskey.New(kms.Client(), name).Unwrap(ctx, "repo-1", stored)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("unwrap with %s: %v (equal: %v)", name, err, bytes.Equal(got, m))
		}
	}
	want := []kmstest.Call{
		{Op: "Encrypt", KeyID: "alias/conveyor-snapshots", Context: map[string]string{kmskey.ContextKey: "repo-1"}},
		{Op: "Decrypt", KeyID: keyA, Context: map[string]string{kmskey.ContextKey: "repo-1"}},
		{Op: "Decrypt", KeyID: kmstest.ARN(keyA), Context: map[string]string{kmskey.ContextKey: "repo-1"}},
		{Op: "Decrypt", KeyID: "alias/conveyor-snapshots", Context: map[string]string{kmskey.ContextKey: "repo-1"}},
	}
	if diff := cmp.Diff(want, kms.Calls()); diff != "" {
		t.Fatalf("KMS calls (-want +got):\n%s", diff)
	}
}

// A key wrapped by key A does not open with key B, nor for another
// repository: both are snapshot.ErrWrongKey, saying what to set.
func TestUnwrapWrongKeyOrRepository(t *testing.T) {
	t.Parallel()
	kms := kmstest.New(t, kmstest.Key{ID: keyA}, kmstest.Key{ID: keyB})
	ctx := context.Background()
	stored, err := kmskey.New(kms.Client(), keyA).Wrap(ctx, "repo-1", master(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = kmskey.New(kms.Client(), keyB).Unwrap(ctx, "repo-1", stored)
	if !errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), kmstest.ARN(keyA)) || !strings.Contains(err.Error(), "snapshot.kms_key") {
		t.Fatalf("unwrap with key B: %v; want ErrWrongKey naming key A and snapshot.kms_key", err)
	}
	_, err = kmskey.New(kms.Client(), keyA).Unwrap(ctx, "repo-2", stored)
	if !errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), "another snapshot repository") {
		t.Fatalf("unwrap for another repository: %v; want ErrWrongKey", err)
	}
}

// A key KMS will not use is not a wrong key: the error says what to do.
func TestKMSRefuses(t *testing.T) {
	t.Parallel()
	kms := kmstest.New(t, kmstest.Key{ID: keyA})
	ctx := context.Background()
	w := kmskey.New(kms.Client(), keyA)
	stored, err := w.Wrap(ctx, "repo-1", master(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		set  func(*kmstest.Key)
		want string
	}{
		{"denied", func(k *kmstest.Key) { k.Denied = true }, "grant the role kms:Encrypt and kms:Decrypt on that key"},
		{"disabled", func(k *kmstest.Key) { k.Disabled = true }, "aws kms enable-key --key-id "},
		{"pending deletion", func(k *kmstest.Key) { k.PendingDeletion = true }, "aws kms cancel-key-deletion --key-id "},
	} {
		kms.Set(keyA, func(k *kmstest.Key) { *k = kmstest.Key{ID: keyA} })
		kms.Set(keyA, c.set)
		for op, err := range map[string]error{
			"unwrap": func() error { _, err := w.Unwrap(ctx, "repo-1", stored); return err }(),
			"wrap":   func() error { _, err := w.Wrap(ctx, "repo-1", master(t)); return err }(),
		} {
			if err == nil || errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, %s: %v; want an error saying %q, not ErrWrongKey", c.name, op, err, c.want)
			}
		}
	}
	_, err = kmskey.New(kms.Client(), "alias/nope").Wrap(ctx, "repo-1", master(t))
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "snapshot.kms_key") {
		t.Fatalf("unknown key: %v", err)
	}
}

// A repository created with a KMS key opens with it (and only it), holds
// its master key only as KMS ciphertext, and snapshots round trip.
func TestRepositoryWithKMSKey(t *testing.T) {
	t.Parallel()
	kms := kmstest.New(t, kmstest.Key{ID: keyA, Alias: "alias/snap"}, kmstest.Key{ID: keyB})
	srv := s3test.Start(t)
	bucket := srv.Bucket(t, "kms")
	src := filepath.Join(t.TempDir(), "volume")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("secret volume data"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := func(key local.KeyWrapper) (*local.Repo, error) {
		return local.Open(ctx, srv.Client, local.Config{Bucket: bucket, Source: src, Key: key})
	}
	r, err := open(kmskey.New(kms.Client(), "alias/snap"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	calls := kms.Calls()
	if len(calls) != 1 || calls[0].Op != "Encrypt" || calls[0].Context[kmskey.ContextKey] != r.ID() {
		t.Fatalf("creating the repository: KMS calls %+v, want one Encrypt naming repository %s", calls, r.ID())
	}

	again, err := open(kmskey.New(kms.Client(), kmstest.ARN(keyA)))
	if err != nil {
		t.Fatalf("reopen with the same key by ARN: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	if err := again.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "secret volume data" {
		t.Fatalf("restored: %q %v", b, err)
	}

	_, err = open(kmskey.New(kms.Client(), keyB))
	if !errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), kmstest.ARN(keyA)) {
		t.Fatalf("open with key B: %v; want ErrWrongKey naming key A", err)
	}
	_, err = open(local.NewPassword("a password"))
	if !errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), "snapshot.kms_key") {
		t.Fatalf("open with a password: %v; want ErrWrongKey pointing at snapshot.kms_key", err)
	}
	kms.Set(keyA, func(k *kmstest.Key) { k.Disabled = true })
	_, err = open(kmskey.New(kms.Client(), "alias/snap"))
	if err == nil || errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("open with the key disabled: %v; want it said, not ErrWrongKey", err)
	}
}

// A repository moves from a password to a KMS key and back by replacing
// its key: no pack is rewritten, snapshots stay readable, and afterwards
// only the new key opens it.
func TestMoveBetweenPasswordAndKMS(t *testing.T) {
	t.Parallel()
	kms := kmstest.New(t, kmstest.Key{ID: keyA, Alias: "alias/snap"})
	srv := s3test.Start(t)
	bucket := srv.Bucket(t, "move")
	src := filepath.Join(t.TempDir(), "volume")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("volume data"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := func(key local.KeyWrapper) (*local.Repo, error) {
		return local.Open(ctx, srv.Client, local.Config{Bucket: bucket, Source: src, Key: key})
	}
	r, err := open(local.NewPassword("the old password"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Create(ctx, snapshot.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	packs := func() []string {
		t.Helper()
		out, err := srv.Client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: aws.String("snapshots/packs/")})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range out.Contents {
			names = append(names, *o.Key+" "+*o.ETag)
		}
		if len(names) == 0 {
			t.Fatal("setup: no packs listed")
		}
		return names
	}
	before := packs()
	if _, _, err := r.ReplaceKey(ctx, kmskey.New(kms.Client(), "alias/snap")); err != nil {
		t.Fatal(err)
	}
	if _, err := open(local.NewPassword("the old password")); !errors.Is(err, snapshot.ErrWrongKey) || !strings.Contains(err.Error(), "snapshot.kms_key") {
		t.Fatalf("open with the password after the move to KMS: %v", err)
	}
	rk, err := open(kmskey.New(kms.Client(), "alias/snap"))
	if err != nil {
		t.Fatalf("open with the KMS key: %v", err)
	}
	restore := func(r *local.Repo) {
		t.Helper()
		dst := filepath.Join(t.TempDir(), "restored")
		if err := r.Restore(ctx, s.ID, snapshot.RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "volume data" {
			t.Fatalf("restored: %q %v", b, err)
		}
	}
	restore(rk)
	if diff := cmp.Diff(before, packs()); diff != "" {
		t.Fatalf("packs changed by the move (-before +after):\n%s", diff)
	}
	// And back, to a new password.
	if _, _, err := rk.ReplaceKey(ctx, local.NewPassword("a new password")); err != nil {
		t.Fatal(err)
	}
	if _, err := open(kmskey.New(kms.Client(), "alias/snap")); !errors.Is(err, snapshot.ErrWrongKey) {
		t.Fatalf("open with the KMS key after the move back: %v", err)
	}
	rp, err := open(local.NewPassword("a new password"))
	if err != nil {
		t.Fatal(err)
	}
	restore(rp)
}
