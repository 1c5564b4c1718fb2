package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// TestCredentialsRequired: without the data dir's secret, nothing can be
// read, listed or written, and a rejected upload starts no job.
func TestCredentialsRequired(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	ctx := context.Background()

	// One object that exists, so that a GET could leak something.
	secret := put(t, up.S3, "secret.txt", []byte("not for strangers\n"))

	wrong := s3server.NewClient(up.Endpoint, up.Creds.AccessKeyID, up.Creds.SecretAccessKey+"x", "us-east-1")
	anon := s3.New(s3.Options{
		BaseEndpoint: aws.String(up.Endpoint), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.AnonymousCredentials{},
	})
	// Real S3 answers an unknown access key with 403 InvalidAccessKeyId;
	// a 404 would make clients report a missing bucket or object.
	unknownKey := s3server.NewClient(up.Endpoint, "AKIDNOTCONVEYOR00000", up.Creds.SecretAccessKey, "us-east-1")
	rejected := []byte("this upload must be refused\n")
	for _, cl := range []struct {
		name string
		c    *s3.Client
	}{{"wrong secret", wrong}, {"anonymous", anon}, {"unknown access key", unknownKey}} {
		name, c := cl.name, cl.c
		ops := map[string]func() error{
			"PutObject": func() error {
				_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String("rejected.txt"), Body: bytes.NewReader(rejected)})
				return err
			},
			"GetObject": func() error {
				_, err := getObject(ctx, c, inputBucket, "secret.txt")
				return err
			},
			"ListObjectsV2": func() error {
				_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(inputBucket)})
				return err
			},
			"HeadBucket": func() error {
				_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(inputBucket)})
				return err
			},
			"ListObjectsV2 state": func() error {
				_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(stateBucket)})
				return err
			},
		}
		// Subtests, so a report names which kind of stranger got through
		// or got the wrong answer.
		t.Run(name, func(t *testing.T) {
			for op, f := range ops {
				err := f()
				var re *awshttp.ResponseError
				switch {
				case err == nil:
					t.Errorf("%s: %s succeeded", name, op)
				case !errors.As(err, &re):
					t.Errorf("%s: %s failed without an HTTP response: %v", name, op, err)
				case re.HTTPStatusCode() != 403:
					t.Errorf("%s: %s: HTTP %d, want 403 (%v)", name, op, re.HTTPStatusCode(), err)
				}
			}
		})
	}

	// A later, valid upload finishing is the barrier: the rejected one, had
	// it produced an event, would have been handled by then.
	sentinel := put(t, up.S3, "sentinel.txt", []byte("after the rejected ones\n"))
	waitState(t, up.S3, sentinel, job.Succeeded, jobTimeout)
	// Only the two accepted uploads have records: the rejected one, had it
	// been stored, would have a third.
	want := []string{"jobs/" + secret + ".json", "jobs/" + sentinel + ".json"}
	got := listKeys(t, up.S3, stateBucket, "jobs/")
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("state bucket holds %v, want only %v", got, want)
	}
	if keys := listKeys(t, up.S3, inputBucket, ""); slices.Contains(keys, "rejected.txt") {
		t.Errorf("the rejected upload is in the input bucket: %v", keys)
	}
}

// hostileKeys are keys that break naive shells, paths and terminals.
func hostileKeys(pwned string) []string {
	long := ""
	for i := 0; len(long) < 1024; i++ {
		seg := fmt.Sprintf("seg%02d-", i) + strings.Repeat("x", 193) // 200 bytes
		if len(long)+len(seg)+1 > 1024 {
			seg = seg[:1024-len(long)-1]
		}
		if long != "" {
			long += "/"
		}
		long += seg
	}
	return []string{
		"with space.txt",
		"plus+sign.txt",
		"unicodé/ключ/日本.txt",
		"../../escape.txt",
		"$(reboot).txt",
		"`touch " + pwned + "`.txt",
		"new\nline.txt",
		"semi;colon|pipe&amp.txt",
		long,
	}
}

// TestHostileKeys: keys with shell, path and control characters either
// are refused by the server or go through intact, with the built-in and an
// external processor, and nothing lands outside the data dir.
func TestHostileKeys(t *testing.T) {
	t.Parallel()
	var rnd [8]byte
	rand.Read(rnd[:])
	pwned := "/tmp/conveyor-pwned-" + hex.EncodeToString(rnd[:])
	keys := hostileKeys(pwned)
	if n := len(keys[len(keys)-1]); n != 1024 {
		t.Fatalf("long key is %d bytes", n)
	}
	_, escapeErr := os.Lstat("/tmp/escape.txt")
	tmpEscapeBefore := escapeErr == nil

	t.Run("report", func(t *testing.T) {
		t.Parallel()
		up := startUp(t, upOptions{})
		results := putHostile(t, up, keys)
		for _, key := range keys {
			id, ok := results[key]
			if !ok {
				continue
			}
			r := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
			if r.Key != key {
				t.Errorf("record key %q, want %q", r.Key, key)
			}
			checkReport(t, up.S3, r, []byte("key: "+key))
			wantOut, err := job.OutputKey(key, "report.json")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Outputs) != 1 || r.Outputs[0].Key != wantOut {
				t.Errorf("outputs of %q: %+v, want one at %q", key, r.Outputs, wantOut)
			}
		}
		checkContained(t, up, pwned, tmpEscapeBefore)
	})

	t.Run("external", func(t *testing.T) {
		t.Parallel()
		script := writeScript(t, t.TempDir(), "keyproc.sh",
			`printf '%s' "$CONVEYOR_INPUT_KEY" > "$CONVEYOR_OUTPUT_DIR/key.txt"`+"\n")
		up := startUp(t, upOptions{Config: fmt.Sprintf("processor:\n  command: [%q]\n", script)})
		results := putHostile(t, up, keys)
		for _, key := range keys {
			id, ok := results[key]
			if !ok {
				continue
			}
			r := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
			outs := checkOutputs(t, up.S3, r)
			wantOut, err := job.OutputKey(key, "key.txt")
			if err != nil {
				t.Fatal(err)
			}
			got, ok := outs[wantOut]
			if !ok || len(outs) != 1 {
				t.Errorf("outputs of %q: %+v, want one at %q", key, r.Outputs, wantOut)
				continue
			}
			if string(got) != key {
				t.Errorf("key.txt of %q holds %q: the processor saw another key", key, got)
			}
		}
		checkContained(t, up, pwned, tmpEscapeBefore)
	})
}

// putHostile uploads one object per key and returns the job IDs of those
// the server accepted. Only "../../escape.txt" may be refused.
func putHostile(t *testing.T, up *upProc, keys []string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, key := range keys {
		id, err := tryPut(context.Background(), up.S3, key, []byte("key: "+key))
		if err != nil {
			var re *awshttp.ResponseError
			if key == "../../escape.txt" && errors.As(err, &re) {
				t.Logf("%q: refused by the server with HTTP %d (%v)", key, re.HTTPStatusCode(), err)
				continue
			}
			t.Errorf("put %q: %v", key, err)
			continue
		}
		ids[key] = id
	}
	if id, ok := ids["../../escape.txt"]; ok {
		// Accepted: the object must exist under exactly that key.
		if in := listKeys(t, up.S3, inputBucket, ""); !slices.Contains(in, "../../escape.txt") {
			t.Errorf("the server acknowledged PUT %q (job %s) but stored no object under that key; input bucket: %q", "../../escape.txt", id, in)
			delete(ids, "../../escape.txt")
		} else {
			t.Logf("%q: accepted and stored under exactly that key", "../../escape.txt")
		}
	}
	return ids
}

// checkContained checks that no key escaped into a command or a path
// outside the data dir.
func checkContained(t *testing.T, up *upProc, pwned string, tmpEscapeBefore bool) {
	t.Helper()
	if _, err := os.Lstat(pwned); err == nil {
		t.Errorf("%s exists: a key was run by a shell", pwned)
	}
	if m, _ := filepath.Glob("/tmp/conveyor-pwned-*"); len(m) > 0 {
		t.Errorf("found %v: a key was run by a shell", m)
	}
	if _, err := os.Lstat("/tmp/escape.txt"); err == nil && !tmpEscapeBefore {
		t.Errorf("/tmp/escape.txt appeared")
	}
	// Everything this test owns lives under the parent of the data dir:
	// the data dir, the processor's scratch (inside the volume) and the
	// process's own start directory.
	s3root := filepath.Join(up.DataDir, "s3")
	allowed := []string{filepath.Join(s3root, inputBucket) + "/", filepath.Join(s3root, outputBucket) + "/"}
	root := filepath.Dir(up.DataDir)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "escape.txt" {
			return nil
		}
		for _, a := range allowed {
			if strings.HasPrefix(p, a) {
				return nil
			}
		}
		t.Errorf("found %s outside the buckets", p)
		return nil
	})
	vol := filepath.Join(up.DataDir, "volume")
	filepath.WalkDir(vol, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		rel, _ := filepath.Rel(vol, p)
		top, _, _ := strings.Cut(rel, string(filepath.Separator))
		switch top {
		case ".", "work", "logs", "locks", "volume-id":
		default:
			t.Errorf("unexpected file on the volume: %s", p)
		}
		return nil
	})
}
