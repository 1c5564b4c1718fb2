package s3server

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v3"
	"github.com/versity/versitygw/s3api/middlewares"
	"github.com/versity/versitygw/s3api/utils"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// postObjectCreated builds the event of a POST Object (browser form upload)
// from what versitygw answered, so that the key is the one it stored, not
// one read again from the form. versitygw's POSTObject
// (s3api/controllers/bucket-post.go) answers a stored object with
//
//   - 204 (the default), 200 or 201 for success_action_status "200"/"201":
//     headers Location (the object's URL, key path-escaped), ETag and
//     x-amz-version-id (when the bucket is versioned); for 201 also a
//     PostResponse document with Bucket, Key, ETag and Location;
//   - 303 for a success_action_redirect: Location is the redirect URL with
//     bucket, key and etag added to its query, and no version ID.
//
// Any other status means nothing was stored. The size is the length of the
// form's file part as versitygw read it; for a 303 it is left 0, since
// without a version ID the consumer must HEAD the object (as for multipart
// and copy events) to learn which version it is.
func (h *hook) postObjectCreated(c fiber.Ctx, bucket string, status int) (s3event.ObjectCreated, bool) {
	oc := s3event.ObjectCreated{EventName: EventPost, Bucket: bucket}
	location := responseHeader(c, "Location")
	var key string
	var err error
	switch status {
	case http.StatusOK, http.StatusCreated, http.StatusNoContent:
		key, err = locationKey(location, bucket)
		if err != nil && status == http.StatusCreated {
			key, err = postResponseKey(c.Response().Body())
		}
		oc.ETag = s3event.TrimETag(responseHeader(c, "ETag"))
		oc.VersionID = responseHeader(c, "X-Amz-Version-Id")
		oc.Size = postedSize(c)
	case http.StatusSeeOther:
		var u *url.URL
		if u, err = url.Parse(location); err == nil {
			key = u.Query().Get("key")
			oc.ETag = s3event.TrimETag(u.Query().Get("etag"))
			if key == "" {
				err = fmt.Errorf("redirect %q names no key", location)
			}
		}
	default:
		return oc, false
	}
	if err != nil {
		// The object exists, but under a name the hook cannot tell: the
		// reconciler will find it.
		h.logf("s3server: %s to bucket %s: %v", EventPost, bucket, err)
		return oc, false
	}
	oc.Key = storedKey(key)
	return oc, true
}

// locationKey reads the key from the Location versitygw sends for a stored
// object: <scheme>://<host>/<bucket>/<path-escaped key>.
func locationKey(location, bucket string) (string, error) {
	u, err := url.Parse(location)
	if err != nil || location == "" {
		return "", fmt.Errorf("response has no usable Location %q", location)
	}
	p, ok := strings.CutPrefix(u.EscapedPath(), "/"+url.PathEscape(bucket)+"/")
	if !ok || p == "" {
		return "", fmt.Errorf("location %q names no object in bucket %s", location, bucket)
	}
	return url.PathUnescape(p)
}

// postResponseKey reads the key from a 201 PostResponse document.
func postResponseKey(body []byte) (string, error) {
	var doc struct {
		Key string `xml:"Key"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("read key from response: %w", err)
	}
	if doc.Key == "" {
		return "", errors.New("response has no Key")
	}
	return doc.Key, nil
}

// postedSize is the number of bytes of the form's file part that versitygw
// stored, 0 when it is not known.
func postedSize(c fiber.Ctx) int64 {
	res, ok := utils.ContextKeyObjectPostResult.Get(c).(middlewares.PostObjectResult)
	if !ok || res.FileRdr == nil {
		return 0
	}
	return res.FileRdr.Length()
}
