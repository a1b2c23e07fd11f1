package hub

import (
	"cmp"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Client talks to a Hugging Face Hub (or a mirror) and writes into a cache.
// The zero value uses Endpoint(), Token() and CacheDir().
type Client struct {
	Endpoint string // "" means Endpoint()
	Token    string // "" means Token()
	CacheDir string // "" means CacheDir()
	// HTTP is the client requests go through; nil means one with no
	// timeout beyond the context's. Its redirect policy is overridden.
	HTTP *http.Client
	// Progress, when set, is called as files are fetched.
	Progress func(Progress)

	// tokenVar names the variable a 401 asks for ("" means HF_TOKEN);
	// set with noEnvToken by the CivitAI client, which must never send
	// the Hugging Face token.
	tokenVar   string
	noEnvToken bool
}

// Progress reports one file's download.
type Progress struct {
	Repo, File   string
	Index, Count int   // this is file Index (1-based) of Count
	Done, Total  int64 // bytes; Total is 0 when unknown
	Cached       bool  // the file was in the cache already: nothing fetched
	Finished     bool  // the file is complete (verified)
}

// ErrChecksum is returned (wrapped) when a download's sha256 (or git blob
// id) differs from the hub's; the partial file has been deleted.
var ErrChecksum = errors.New("checksum mismatch")

// StatusError is an HTTP error from the hub.
type StatusError struct {
	Code      int
	URL       string
	ErrorCode string // the hub's X-Error-Code (GatedRepo, RepoNotFound, ...)
	Message   string // the hub's X-Error-Message, if any
	TokenVar  string // the variable that holds the token ("" means HF_TOKEN)
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: HTTP %d", e.URL, e.Code)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	switch tv := cmp.Or(e.TokenVar, "HF_TOKEN"); {
	case (e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden) && tv != "HF_TOKEN":
		return msg + " (the model needs a login: set " + tv + " to an API key)"
	case e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden:
		return msg + " (the repository is gated or private, or does not exist: set HF_TOKEN to a token that has access, after accepting the model's terms on its page)"
	case e.Code == http.StatusNotFound:
		return msg + " (no such repository, revision or file)"
	}
	return msg
}

func (c *Client) endpoint() string {
	if c.Endpoint != "" {
		return strings.TrimRight(c.Endpoint, "/")
	}
	return Endpoint()
}

func (c *Client) token() string {
	if c.Token != "" || c.noEnvToken {
		return c.Token
	}
	return Token()
}

func (c *Client) cache() string {
	if c.CacheDir != "" {
		return c.CacheDir
	}
	return CacheDir()
}

// httpClient returns the client with redirects left to the caller.
func (c *Client) httpClient() *http.Client {
	h := http.Client{}
	if c.HTTP != nil {
		h = *c.HTTP
	}
	h.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &h
}

// do sends a request, with the token only when it goes to the endpoint's
// host (never to the CDN a file redirects to). It follows redirects when
// follow is set, else returns the 3xx response.
func (c *Client) do(ctx context.Context, method, rawURL string, hdr http.Header, follow bool) (*http.Response, error) {
	base, err := url.Parse(c.endpoint())
	if err != nil {
		return nil, fmt.Errorf("HF_ENDPOINT %q: %w", c.endpoint(), err)
	}
	hc := c.httpClient()
	for range 10 {
		req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", "darkroom")
		if tok := c.token(); tok != "" && req.URL.Host == base.Host {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		if !follow || resp.StatusCode < 300 || resp.StatusCode >= 400 || resp.Header.Get("Location") == "" {
			return resp, nil
		}
		loc, err := req.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			resp.Body.Close()
			return nil, err
		}
		resp.Body.Close()
		rawURL = loc.String()
	}
	return nil, fmt.Errorf("%s: too many redirects", rawURL)
}

func (c *Client) statusError(resp *http.Response) error {
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return &StatusError{Code: resp.StatusCode, URL: resp.Request.URL.String(), TokenVar: c.tokenVar,
		ErrorCode: resp.Header.Get("X-Error-Code"), Message: resp.Header.Get("X-Error-Message")}
}

func (c *Client) getJSON(ctx context.Context, rawURL string, v any) (next string, err error) {
	resp, err := c.do(ctx, http.MethodGet, rawURL, nil, true)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", c.statusError(resp)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return "", fmt.Errorf("%s: %w", rawURL, err)
	}
	return nextLink(resp.Header.Get("Link")), nil
}

// nextLink is the rel="next" URL of a Link header (the tree API's
// pagination), or "".
func nextLink(h string) string {
	for part := range strings.SplitSeq(h, ",") {
		u, params, ok := strings.Cut(part, ";")
		if ok && strings.Contains(params, `rel="next"`) {
			return strings.Trim(strings.TrimSpace(u), "<>")
		}
	}
	return ""
}

func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// Commit asks the hub which commit rev ("" means main) of repo is:
// GET /api/models/{repo}/revision/{rev}.
func (c *Client) Commit(ctx context.Context, repo, rev string) (string, error) {
	if rev == "" {
		rev = "main"
	}
	var info struct {
		SHA string `json:"sha"`
	}
	if _, err := c.getJSON(ctx, c.endpoint()+"/api/models/"+repo+"/revision/"+url.PathEscape(rev), &info); err != nil {
		return "", err
	}
	if !isCommit(info.SHA) {
		return "", fmt.Errorf("%s@%s: the hub answered no commit hash (%q)", repo, rev, info.SHA)
	}
	return info.SHA, nil
}

// File is a file of a repository, as the tree API lists it.
type File struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	OID  string `json:"oid"` // the git blob id
	LFS  *struct {
		OID  string `json:"oid"` // the sha256 of the contents
		Size int64  `json:"size"`
	} `json:"lfs,omitempty"`
}

// Files lists every file of repo at rev: GET
// /api/models/{repo}/tree/{rev}?recursive=true, following the pagination.
func (c *Client) Files(ctx context.Context, repo, rev string) ([]File, error) {
	if rev == "" {
		rev = "main"
	}
	next := c.endpoint() + "/api/models/" + repo + "/tree/" + url.PathEscape(rev) + "?recursive=true"
	var out []File
	for pages := 0; next != ""; pages++ {
		if pages > 1000 {
			return nil, fmt.Errorf("%s: more than 1000 pages of files", repo)
		}
		var page []struct {
			Type string `json:"type"`
			File
		}
		n, err := c.getJSON(ctx, next, &page)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.Type == "file" {
				out = append(out, e.File)
			}
		}
		next = n
	}
	return out, nil
}

// meta is what a HEAD on resolve/{rev}/{path} tells.
type meta struct {
	commit, etag string
	size         int64
	location     string // where to GET the contents (the CDN for LFS files)
}

func (c *Client) head(ctx context.Context, repo, rev, file string) (meta, error) {
	u := c.endpoint() + "/" + repo + "/resolve/" + url.PathEscape(rev) + "/" + escapePath(file)
	// Redirects are followed by hand: the hub's answer carries the
	// metadata on the 302 to the CDN (X-Linked-*), and a redirect within
	// the hub (a renamed repository) on its last response; the first value
	// seen of each X- header wins, ETag and Content-Length come from the
	// last response.
	var m meta
	var linkedSize, size string
	next := u
	for hops := 0; ; hops++ {
		if hops == 10 {
			return meta{}, fmt.Errorf("%s: too many redirects", u)
		}
		resp, err := c.do(ctx, http.MethodHead, next, http.Header{"Accept-Encoding": {"identity"}}, false)
		if err != nil {
			return meta{}, err
		}
		if resp.StatusCode >= 400 {
			return meta{}, c.statusError(resp)
		}
		resp.Body.Close()
		h := resp.Header
		if m.commit == "" {
			m.commit = h.Get("X-Repo-Commit")
		}
		if m.etag == "" {
			m.etag = h.Get("X-Linked-Etag")
		}
		if linkedSize == "" {
			linkedSize = h.Get("X-Linked-Size")
		}
		m.location = resp.Request.URL.String()
		loc := h.Get("Location")
		if resp.StatusCode < 300 || loc == "" {
			if m.etag == "" {
				m.etag = h.Get("ETag")
			}
			size = h.Get("Content-Length")
			break
		}
		l, err := resp.Request.URL.Parse(loc)
		if err != nil {
			return meta{}, err
		}
		m.location = l.String()
		if l.Host != resp.Request.URL.Host {
			// The CDN: GET it later. Its ETag is not the hub's.
			if m.etag == "" {
				m.etag = h.Get("ETag")
			}
			break
		}
		next = m.location
	}
	m.etag = strings.Trim(strings.TrimPrefix(m.etag, "W/"), `"`)
	if linkedSize != "" {
		size = linkedSize
	}
	m.size, _ = strconv.ParseInt(size, 10, 64)
	switch {
	case m.commit == "":
		return meta{}, fmt.Errorf("%s: the hub sent no X-Repo-Commit header (is HF_ENDPOINT a Hugging Face Hub?)", u)
	case !isCommit(strings.ToLower(m.commit)):
		return meta{}, fmt.Errorf("%s: the hub sent X-Repo-Commit %q, not a commit hash", u, m.commit)
	case m.etag == "" || strings.ContainsAny(m.etag, `/\`) || m.etag == "." || m.etag == "..":
		return meta{}, fmt.Errorf("%s: the hub sent no usable ETag (%q)", u, m.etag)
	}
	return m, nil
}

// Download fetches one file of repo at rev ("" means main) into the cache,
// unless its blob is there already, and returns the snapshot path and the
// commit. A partial download (blobs/<etag>.incomplete) is resumed with an
// HTTP Range request. The contents are checked against the ETag when it is
// a sha256 (LFS files) or a git blob id (small files). When rev is a
// branch or tag, refs/<rev> is written.
func (c *Client) Download(ctx context.Context, repo, rev, file string) (path, commit string, err error) {
	return c.download(ctx, repo, rev, file, 1, 1)
}

func (c *Client) download(ctx context.Context, repo, rev, file string, index, count int) (string, string, error) {
	if rev == "" {
		rev = "main"
	}
	if !fs.ValidPath(rev) {
		return "", "", fmt.Errorf("%q: not a revision", rev)
	}
	if !fs.ValidPath(file) {
		return "", "", fmt.Errorf("%q: not a file path in a repository", file)
	}
	m, err := c.head(ctx, repo, rev, file)
	if err != nil {
		return "", "", err
	}
	cache := c.cache()
	root := RepoDir(cache, repo)
	blob := filepath.Join(root, "blobs", m.etag)
	snap := filepath.Join(root, "snapshots", m.commit, filepath.FromSlash(file))
	p := Progress{Repo: repo, File: file, Index: index, Count: count, Total: m.size}
	if st, err := os.Stat(blob); err == nil && (m.size == 0 || st.Size() == m.size) {
		p.Done, p.Cached, p.Finished = st.Size(), true, true
		c.report(p)
	} else if err := c.fetch(ctx, m, blob, p); err != nil {
		return "", "", fmt.Errorf("%s/%s: %w", repo, file, err)
	}
	if err := link(blob, snap); err != nil {
		return "", "", err
	}
	if err := writeRef(cache, repo, rev, m.commit); err != nil {
		return "", "", err
	}
	return snap, m.commit, nil
}

func (c *Client) report(p Progress) {
	if c.Progress != nil {
		c.Progress(p)
	}
}

// checker returns the hash the etag names, and its expected sum: sha256
// for a 64-digit etag, the git blob id (sha1 of "blob <size>\0" and the
// contents) for a 40-digit one, nil for anything else.
func checker(etag string, size int64) (hash.Hash, string) {
	if _, err := hex.DecodeString(etag); err != nil {
		return nil, ""
	}
	switch len(etag) {
	case 64:
		return sha256.New(), strings.ToLower(etag)
	case 40:
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", size)
		return h, strings.ToLower(etag)
	}
	return nil, ""
}

// fetch downloads m into blob, through blob.incomplete.
func (c *Client) fetch(ctx context.Context, m meta, blob string, p Progress) error {
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return err
	}
	part := blob + ".incomplete"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if m.size > 0 && have > m.size {
		if err := f.Truncate(0); err != nil {
			return err
		}
		have = 0
	}
	hdr := http.Header{"Accept-Encoding": {"identity"}}
	if have > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	var resp *http.Response
	if have == 0 || have < m.size || m.size == 0 {
		resp, err = c.do(ctx, http.MethodGet, m.location, hdr, true)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusPartialContent && have > 0:
		case resp.StatusCode == http.StatusOK:
			have = 0 // the server ignored the range: start over
			if err := f.Truncate(0); err != nil {
				return err
			}
		case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
			resp.Body.Close()
			resp = nil // the partial file may be whole already: check it
		default:
			return c.statusError(resp)
		}
	}
	h, want := checker(m.etag, m.size)
	if h != nil && have > 0 {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(h, f, have); err != nil {
			return err
		}
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return err
	}
	p.Done = have
	c.report(p)
	if resp != nil {
		var w io.Writer = f
		if h != nil {
			w = io.MultiWriter(f, h)
		}
		buf := make([]byte, 1<<20)
		for {
			n, rerr := resp.Body.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					return err
				}
				p.Done += int64(n)
				c.report(p)
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return rerr // the partial file stays, to be resumed
			}
		}
	}
	if m.size > 0 && p.Done != m.size {
		if p.Done > m.size {
			f.Close()
			os.Remove(part)
		}
		return fmt.Errorf("got %d bytes of %d (run the pull again to resume)", p.Done, m.size)
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			f.Close()
			os.Remove(part)
			return fmt.Errorf("%w: the download hashes to %s, the hub says %s; the partial file was deleted", ErrChecksum, got, want)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(part, blob); err != nil {
		return err
	}
	if m.size == 0 {
		p.Total = p.Done // it was an estimate
	}
	p.Finished = true
	c.report(p)
	return nil
}
