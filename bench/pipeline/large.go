package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Files of the large phase, in the temp dir.
const (
	largeName    = "large.bin"
	peerDownName = "peer-down.bin"
	largeKey     = "bench/large.bin"
	peerKey      = "bench/peer-up" // in the state bucket: no job is started
)

// Bounds and pace of the large phase.
const (
	largeTimeout   = 30 * time.Minute
	largePollEvery = 20 * time.Millisecond
	partSize       = 16 << 20 // as `conveyor put`
)

// runLarge generates the file, runs it through the pipeline, then copies it
// up and down with the AWS CLI through the same server.
func runLarge(ctx context.Context, up *upProc, tmp string, size int64) (*Large, error) {
	ctx, cancel := context.WithTimeout(ctx, largeTimeout)
	defer cancel()
	file := filepath.Join(tmp, largeName)
	fmt.Fprintf(progressOut, "large: generating %s...\n", humanBytes(size))
	if err := generate(file, size); err != nil {
		return nil, err
	}
	l := &Large{Bytes: size, Processor: up.processor, PartSizeBytes: partSize}

	fmt.Fprintln(progressOut, "large: pipeline (upload, fetch, process, record)...")
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	uploader := manager.NewUploader(up.s3, func(u *manager.Uploader) { u.PartSize = partSize })
	l.UploadConcurrency = uploader.Concurrency
	start := time.Now()
	res, err := uploader.Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(largeKey), Body: f})
	putDone := time.Now()
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", largeKey, err)
	}
	id := jobID(largeKey, res.VersionID, res.ETag)
	rec, seen, err := waitSucceeded(ctx, up, id, largePollEvery)
	if err != nil {
		return nil, err
	}
	l.JobID = id
	l.UploadSeconds = putDone.Sub(start).Seconds()
	l.PipelineSeconds = rec.FinishedAt.Sub(start.Round(0)).Seconds()
	l.PipelinePollSeenSeconds = seen.Sub(start).Seconds()
	l.RecordTimingsMS = timingsOf(rec.Timings)
	l.PipelinePeakRSSMB = up.peakRSSMB()

	awsBin, err := exec.LookPath("aws")
	if err != nil {
		l.PeerSkipped = "aws (the AWS CLI) is not on PATH; install it (Debian: apt-get install awscli) to compare"
		fmt.Fprintln(progressOut, "large: "+l.PeerSkipped)
		return l, nil
	}
	fmt.Fprintln(progressOut, "large: peer (aws s3 cp up and down through the same server)...")
	env, err := up.awsEnv(ctx, tmp)
	if err != nil {
		return nil, err
	}
	l.PeerClient = awsVersion(ctx, awsBin, env)
	down := filepath.Join(tmp, peerDownName)
	peerUp, err := timeCommand(ctx, env, awsBin, "s3", "cp", "--only-show-errors", file, "s3://"+stateBucket+"/"+peerKey)
	if err != nil {
		return nil, err
	}
	peerDown, err := timeCommand(ctx, env, awsBin, "s3", "cp", "--only-show-errors", "s3://"+stateBucket+"/"+peerKey, down)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(down); err != nil || st.Size() != size {
		return nil, fmt.Errorf("peer download %s is not %d bytes (%v)", down, size, err)
	}
	os.Remove(down)
	l.PeerUpSeconds, l.PeerDownSeconds = peerUp.Seconds(), peerDown.Seconds()
	l.PeerSeconds = (peerUp + peerDown).Seconds()
	l.Ratio = l.PipelineSeconds / l.PeerSeconds
	l.PeakRSSMB = up.peakRSSMB()
	return l, nil
}

// generate writes size pseudo-random bytes to name, streamed in 1 MiB
// blocks so memory use does not depend on size.
func generate(name string, size int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.NewChaCha8(chachaSeed(uint64(time.Now().UnixNano()), 0))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		r.Read(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			f.Close()
			return fmt.Errorf("generate %s: %w", name, err)
		}
		left -= n
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("generate %s: %w", name, err)
	}
	return f.Close()
}

// timeCommand runs a command and returns how long it took.
func timeCommand(ctx context.Context, env []string, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return d, nil
}

func awsVersion(ctx context.Context, bin string, env []string) string {
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "aws (version unknown)"
	}
	return strings.TrimSpace(string(out))
}
