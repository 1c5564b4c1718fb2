package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
)

// TestLargeFileRSS: a 1 GiB upload is processed with flat memory. It does
// not run in parallel with other tests, so the RSS is this job's.
func TestLargeFileRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB upload: skipped with -short")
	}
	const size = 1 << 30
	const maxRSS = 200 << 20
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Bavail*uint64(st.Bsize) < 4*size {
		t.Skipf("needs about 4 GiB free in %s (the file, the object, the multipart parts, the copy on the volume)", dir)
	}

	path := filepath.Join(dir, "large.bin")
	sum := writeLargeFile(t, path, size)
	defer os.Remove(path)

	up := startUp(t, upOptions{})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	res, err := manager.NewUploader(up.S3, func(u *manager.Uploader) { u.PartSize = 16 << 20 }).Upload(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(inputBucket), Key: aws.String("large/large.bin"), Body: f,
	})
	if err != nil {
		t.Fatalf("upload 1 GiB: %v", err)
	}
	uploaded := time.Since(start)
	id := jobID("large/large.bin", aws.ToString(res.VersionID), aws.ToString(res.ETag))
	r := waitState(t, up.S3, id, job.Succeeded, 10*time.Minute)
	total := time.Since(start)
	if r.Size != size || r.InputSHA256 != sum {
		t.Errorf("record: size %d input_sha256 %s, want %d %s", r.Size, r.InputSHA256, size, sum)
	}
	var rep reportDoc
	if err := json.Unmarshal(mustGet(t, up.S3, outputBucket, "large/large.bin/report.json"), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Size != size || rep.SHA256 != sum {
		t.Errorf("report.json: size %d sha256 %s, want %d %s", rep.Size, rep.SHA256, size, sum)
	}
	hwm := vmHWM(t, up.PID())
	t.Logf("1 GiB: upload %s, upload to success %s (fetch %dms, process %dms); conveyor up peak RSS (VmHWM) %.1f MB",
		uploaded.Round(time.Millisecond), total.Round(time.Millisecond), r.Timings.FetchMS, r.Timings.ProcessMS, float64(hwm)/1e6)
	if hwm >= maxRSS {
		t.Errorf("conveyor up peak RSS %d bytes, want < %d", hwm, maxRSS)
	}
}

// writeLargeFile writes size bytes made of one random 1 MiB block, each
// copy stamped with its index so no two blocks are alike, and returns the
// sha256. It streams: memory stays at one block.
func writeLargeFile(t *testing.T, path string, size int) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	rand.Read(block)
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	for i := 0; i < size/len(block); i++ {
		for off := 0; off < len(block); off += 4096 {
			binary.BigEndian.PutUint64(block[off:], uint64(i)<<20|uint64(off))
		}
		if _, err := w.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// vmHWM is the peak resident set size of pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("read peak RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
