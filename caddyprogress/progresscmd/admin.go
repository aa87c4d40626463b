package progresscmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// The admin API's documents (GET /upload_progress/ and
// /upload_progress/<tracker>/<id>), as package progress defines them for
// the module's admin route, under this command's names. An uploadInfo is
// an entry of the listing, or (for a finished upload) its status.
type (
	listing     = progress.Listing
	trackerInfo = progress.TrackerListing
	clusterInfo = progress.ClusterListing
	uploadInfo  = progress.ListedUpload
	fileInfo    = progress.FileStatus
	redisInfo   = progress.RedisHealth
)

// adminClient reads the upload_progress admin routes of one Caddy
// instance, at an address in the form Caddy's own commands take
// (localhost:2019, unix//path/to/socket).
type adminClient struct {
	address    string // as given, or as found in the config
	origin     string // what requests are made to
	sendOrigin bool   // whether they carry it as Origin: over TCP, as Caddy's own commands do
	client     *http.Client
}

// newAdminClient resolves the admin address as `caddy stop` does: the
// --admin flag, else the admin listener of the --config file, else
// Caddy's default.
func newAdminClient(address, configFile, adapter string) (*adminClient, error) {
	address, err := caddycmd.DetermineAdminAPIAddress(address, nil, configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin address: %v", err)
	}
	addr, err := caddy.ParseNetworkAddress(address)
	if err != nil || addr.PortRangeSize() > 1 {
		return nil, fmt.Errorf("admin address %q is not an address such as localhost:2019 or unix//path/to/socket", address)
	}
	origin := "http://" + addr.JoinHostPort(0)
	if addr.IsUnixNetwork() || addr.IsFdNetwork() {
		origin = "http://127.0.0.1" // any host: the dialer below ignores it
	}
	if _, err := url.Parse(origin); err != nil {
		return nil, fmt.Errorf("admin address %q is not an address such as localhost:2019 or unix//path/to/socket", address)
	}
	dial := addr.JoinHostPort(0)
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, addr.Network, dial)
		},
		MaxIdleConns: 1,
	}
	return &adminClient{
		address:    address,
		origin:     origin,
		sendOrigin: !addr.IsUnixNetwork() && !addr.IsFdNetwork(),
		client:     &http.Client{Transport: transport, Timeout: 5 * time.Second},
	}, nil
}

// get decodes the JSON answer to GET path into v; found is false for a 404.
func (a *adminClient) get(ctx context.Context, path string, v any) (found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.origin+path, nil)
	if err != nil {
		return false, err
	}
	if a.sendOrigin {
		req.Header.Set("Origin", a.origin)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("asking Caddy's admin API at %s: %v", a.origin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return false, fmt.Errorf("reading the admin API's answer: %v", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("the admin API answered %s to GET %s: %s", resp.Status, path, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, fmt.Errorf("the admin API's answer to GET %s is not the expected JSON: %v", path, err)
	}
	return true, nil
}

// clusterQuery asks the admin routes for every instance's uploads
// (for a tracker with redis; others ignore it).
const clusterQuery = "?cluster=1"

// list returns the trackers and their uploads in flight; with cluster,
// every instance's.
func (a *adminClient) list(ctx context.Context, cluster bool) (listing, error) {
	var l listing
	path := "/upload_progress/"
	if cluster {
		path += clusterQuery
	}
	found, err := a.get(ctx, path, &l)
	if err == nil && !found {
		err = fmt.Errorf("the admin API has no /upload_progress/ route: is this a Caddy with the upload_progress module?")
	}
	return l, err
}

// upload returns one upload's status, ok false when the tracker no
// longer knows it; with cluster, also an upload of another instance.
func (a *adminClient) upload(ctx context.Context, tracker, id string, cluster bool) (u uploadInfo, ok bool, err error) {
	path := "/upload_progress/" + url.PathEscape(tracker) + "/" + url.PathEscape(id)
	if cluster {
		path += clusterQuery
	}
	ok, err = a.get(ctx, path, &u)
	return u, ok && u.Status != "unknown", err
}
