package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// maxLogChunk bounds one read of a log, so following a huge log is a
// series of small requests.
const maxLogChunk = 1 << 20

// handleLog serves a job's log from ?offset= (default 0) up to
// maxLogChunk bytes, as text. X-Log-Size is the log's size at the time
// and X-Log-Next the offset to ask for next.
func (s *Server) handleLog(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !job.ValidID(id) || s.deps.LogPath == nil {
		http.Error(w, "no such log", http.StatusNotFound)
		return
	}
	p, err := s.deps.LogPath(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	off, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		// No attempt has started yet: an empty log, not an error.
		w.Header().Set("X-Log-Size", "0")
		w.Header().Set("X-Log-Next", "0")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		return
	}
	if err != nil {
		http.Error(w, "open log: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	size := st.Size()
	off = min(max(off, 0), size)
	n := min(size-off, maxLogChunk)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Log-Size", strconv.FormatInt(size, 10))
	h.Set("X-Log-Next", strconv.FormatInt(off+n, 10))
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	if r.URL.Query().Get("download") == "1" {
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": id + ".log"}))
	}
	io.Copy(w, io.NewSectionReader(f, off, n))
}

// handleOutput streams one of a job's outputs from the output bucket,
// through the dashboard's own S3 client: the browser never sees
// credentials or a presigned URL. It is always an attachment of type
// application/octet-stream, so an output cannot run as a page here.
func (s *Server) handleOutput(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 || n >= len(rec.Outputs) {
		http.Error(w, fmt.Sprintf("job %s has no output %q", rec.ID, r.PathValue("n")), http.StatusNotFound)
		return
	}
	o := rec.Outputs[n]
	obj, err := s.deps.S3.GetObject(r.Context(), &s3.GetObjectInput{Bucket: aws.String(s.deps.OutputBucket), Key: aws.String(o.Key)})
	if err != nil {
		http.Error(w, fmt.Sprintf("read output %d of job %s: %v", n, rec.ID, err), http.StatusBadGateway)
		return
	}
	defer obj.Body.Close()
	if err := rec.CheckOutput("s3://"+s.deps.OutputBucket+"/"+o.Key, obj.Metadata); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": downloadName(o.Key)}))
	h.Set("Cache-Control", "no-store")
	if obj.ContentLength != nil {
		h.Set("Content-Length", strconv.FormatInt(*obj.ContentLength, 10))
	}
	io.Copy(w, obj.Body)
}

// downloadName is a file name for the browser: the key's base name, with
// anything that is not printable replaced.
func downloadName(key string) string {
	b := path.Base(key)
	b = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' || r == '/' {
			return '_'
		}
		return r
	}, b)
	if b == "" || b == "." || b == ".." {
		return "output"
	}
	return b
}

// uploadResult is the answer to an upload.
type uploadResult struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	JobID  string `json:"job_id,omitempty"` // the job the object implies (unless filters exclude it)
}

// handleUpload streams the request body into the input bucket under
// ?key=, with the SDK's multipart uploader: memory stays at PartSize ×
// UploadConcurrency whatever the file's size.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if err := checkKey(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	up := manager.NewUploader(s.deps.S3, func(u *manager.Uploader) {
		u.PartSize = s.cfg.PartSize
		// S3 allows 10,000 parts: a file beyond PartSize × 10,000 needs
		// larger parts (the browser sends its size).
		if r.ContentLength > 0 {
			u.PartSize = max(u.PartSize, r.ContentLength/int64(manager.MaxUploadParts-1)+1)
		}
		u.Concurrency = s.cfg.UploadConcurrency
	})
	body := &countingReader{r: r.Body}
	in := &s3.PutObjectInput{Bucket: aws.String(s.deps.InputBucket), Key: aws.String(key), Body: body}
	if ct := r.Header.Get("Content-Type"); ct != "" && len(ct) < 200 {
		in.ContentType = aws.String(ct)
	}
	if _, err := up.Upload(r.Context(), in); err != nil {
		s.logf("dashboard: upload s3://%s/%q: %v", s.deps.InputBucket, key, err)
		http.Error(w, fmt.Sprintf("upload %q: %v", key, err), http.StatusBadGateway)
		return
	}
	res := uploadResult{Bucket: s.deps.InputBucket, Key: key, Size: body.n}
	res.JobID = s.jobIDOf(r.Context(), key)
	if res.JobID != "" {
		s.Touch(res.JobID)
	}
	writeJSON(w, res)
}

// jobIDOf is the job ID of the object now at key in the input bucket.
func (s *Server) jobIDOf(ctx context.Context, key string) string {
	h, err := s.deps.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.deps.InputBucket), Key: aws.String(key)})
	if err != nil {
		return ""
	}
	return job.ID(s.deps.InputBucket, key, job.Revision(aws.ToString(h.VersionId), s3event.TrimETag(aws.ToString(h.ETag))))
}

// checkKey accepts the keys S3 accepts and Conveyor can turn into jobs.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("key is empty: give ?key=NAME")
	case len(key) > 1024:
		return errors.New("key is longer than 1,024 bytes (the S3 limit)")
	case !utf8.ValidString(key):
		return errors.New("key is not valid UTF-8")
	case strings.HasSuffix(key, "/"):
		return errors.New("key ends in /: that is a folder, not a file")
	case strings.ContainsAny(key, "\x00"):
		return errors.New("key contains a NUL byte")
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
