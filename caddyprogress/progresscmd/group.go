package progresscmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// groupReservation is the proxy's answer to a group reservation
// (POST <status route>?group, 201): a fresh group ID and, with
// status_access token, the group's token.
type groupReservation struct {
	Group string `json:"group"`
	Token string `json:"token"`
}

// setGroup settles the group the uploads join, from --group,
// --group-token and --new-group:
//   - --new-group reserves a group (an ID nobody can guess, and its
//     token in token mode), in either access mode; with --resumable, a
//     run that goes on with an earlier run's upload goes on in its group;
//   - --group <id> joins that group, showing --group-token if given;
//     without it, a group reservation tells whether the proxy is in
//     token mode (its answer carries a token), where the uploads would
//     be tracked each on its own, outside the group: send then refuses
//     to start, rather than send files that silently join no group.
func (o *sendOptions) setGroup(ctx context.Context, jobs []fileJob, newGroup bool, groupToken string) error {
	switch {
	case newGroup && o.group != "":
		return fmt.Errorf("--new-group reserves a new group, --group %q joins one: give one of them", o.group)
	case groupToken != "" && o.group == "":
		return fmt.Errorf("--group-token is the token of the group that --group names: give --group too")
	case newGroup:
		if o.routes.status == nil {
			return fmt.Errorf("--new-group reserves the group through the status route, and --status is off")
		}
		o.newGroup = true
		if g, token, ok := o.earlierGroup(jobs); ok {
			o.group, o.groupToken = g, token
			return nil
		}
		res, err := o.reserveGroup(ctx)
		if err != nil {
			return err
		}
		o.group, o.groupToken = res.Group, res.Token
	case o.group != "" && groupToken == "" && o.routes.status != nil:
		if res, err := o.reserveGroup(ctx); err == nil && res.Token != "" {
			return fmt.Errorf("--group %s: the proxy has status_access token, where an upload joins a group only if it shows the group's token: give it with --group-token, or use --new-group for a new group", o.group)
		}
	default:
		o.groupToken = groupToken
	}
	return nil
}

// earlierGroup is the group (and its token) that an earlier run of
// send --resumable --new-group made for one of these files' uploads,
// still kept because that upload has not ended.
func (o *sendOptions) earlierGroup(jobs []fileJob) (group, token string, ok bool) {
	if !o.resumable {
		return "", "", false
	}
	for _, job := range jobs {
		if u, kept := o.store.load(fingerprint(job.path, job.info, o.to.String())); kept && u.Group != "" {
			return u.Group, u.GroupToken, true
		}
	}
	return "", "", false
}

// reserveGroup asks the status route for a new group.
func (o *sendOptions) reserveGroup(ctx context.Context) (groupReservation, error) {
	target := *o.routes.status
	target.RawQuery = "group"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), nil)
	if err != nil {
		return groupReservation{}, fmt.Errorf("reserving a group: %v", err)
	}
	for k, v := range o.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the method and URL again
		}
		return groupReservation{}, fmt.Errorf("reserving a group at %s: %v", target.Redacted(), err)
	}
	a := readAnswer(resp)
	var res groupReservation
	if a.Code != http.StatusCreated || json.Unmarshal(a.Body, &res) != nil || res.Group == "" {
		return groupReservation{}, fmt.Errorf("reserving a group at %s: the proxy answered %s: %s",
			target.Redacted(), a.Status, printable(strings.TrimSpace(string(a.Body)), false))
	}
	return res, nil
}

// printGroup prints the group that send reserved, and its token, so
// that its progress can be read (<status route>?group=<id>).
func (o *sendOptions) printGroup(w io.Writer) {
	if !o.newGroup {
		return
	}
	fmt.Fprintln(w, "group "+printable(o.group, false))
	if o.groupToken != "" {
		fmt.Fprintln(w, "group token "+printable(o.groupToken, false))
	}
}
