package ssmtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
)

// IMDS returns the endpoint of a fake instance metadata service (IMDSv2:
// a PUT for a session token, then GETs presenting it) of instance id,
// serving what the worker reads: instance-id, the Auto Scaling target
// lifecycle state, the Spot interruption notice and the group's name tag.
func (s *Server) IMDS(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.instances[id] == nil {
		s.t.Fatalf("ssmtest: no instance %s", id)
	}
	if m := s.imds[id]; m != nil {
		return m.URL
	}
	token := "imds-token-" + id
	m := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			if r.Method != http.MethodPut || r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
				http.Error(w, "a token is a PUT with a TTL", http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
			io.WriteString(w, token)
			return
		}
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != token {
			http.Error(w, "IMDSv2 requires a session token", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		inst := *s.instances[id]
		group := ""
		if s.group != nil && inst.Lifecycle != "" {
			group = s.group.Name
		}
		s.mu.Unlock()
		var body string
		switch strings.TrimPrefix(r.URL.Path, "/latest/meta-data/") {
		case "instance-id":
			body = id
		case "autoscaling/target-lifecycle-state":
			body = inst.Lifecycle
		case "spot/instance-action":
			body = inst.SpotAction
		case "tags/instance/aws:autoscaling:groupName":
			body = group
		}
		if body == "" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, body)
	}))
	s.imds[id] = m
	return m.URL
}
