package progress

import "time"

// Listing is the admin API's answer to GET /upload_progress/ (the
// module's admin route; caddy upload-progress top reads it).
type Listing struct {
	Trackers []TrackerListing `json:"trackers"`
}

// TrackerListing is one tracker in the listing.
type TrackerListing struct {
	Name string `json:"name"`
	// Records counts every record held: in flight, finished and reserved.
	Records int `json:"records"`
	// Memory is the bytes the tracker's records take, as counted
	// against MaxMemory (of which the tracker keeps at most its budget:
	// half, with the default GOGC).
	Memory int64 `json:"memory"`
	// MaxMemory is the tracker's max_memory.
	MaxMemory int64 `json:"max_memory"`
	// Uploads are the uploads in flight, oldest first.
	Uploads []ListedUpload `json:"uploads"`
	// Redis is the health of the tracker's Redis, with redis set
	// (package caddyprogress); left out without.
	Redis []RedisHealth `json:"redis,omitempty"`
	// Cluster says whether Uploads hold every instance's, with
	// ?cluster=1 and redis set (package caddyprogress); left out otherwise.
	Cluster *ClusterListing `json:"cluster,omitempty"`
}

// ListedUpload is one upload in flight in the listing.
type ListedUpload struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Received  int64     `json:"received"`
	Total     *int64    `json:"total"`
	Speed     int64     `json:"speed"`
	StartedAt time.Time `json:"started_at"`
	// Group is the ID of the group the upload is a member of; left out
	// when it is in none.
	Group string `json:"group,omitempty"`
	// Files are a multipart upload's parts, as in its status; left out
	// for other uploads.
	Files []FileStatus `json:"files,omitempty"`
	// FilesTruncated is true for an upload of another instance whose
	// document left its files out (over 64 KiB, see Status.FilesTruncated); left out
	// otherwise.
	FilesTruncated bool `json:"files_truncated,omitempty"`
	// Error says what went wrong, in a finished upload's document read
	// through GET /upload_progress/<tracker>/<id>; left out otherwise.
	Error string `json:"error,omitempty"`
	// Instance is the instance that runs the upload, with ?cluster=1 and
	// redis set (ClusterListing.Instance for this one's); left out
	// otherwise.
	Instance string `json:"instance,omitempty"`
}

// ClusterListing is what a tracker's listing says of the cluster, with
// ?cluster=1 and redis; left out otherwise.
type ClusterListing struct {
	// Instance is this instance's name (its host name and process ID),
	// as the instance of its uploads shows it.
	Instance string `json:"instance"`
	// Available is false when Redis did not answer: the uploads listed
	// are then this instance's only.
	Available bool `json:"available"`
	// InFlight counts the uploads in flight on every instance, listed or
	// not; 0 while unavailable.
	InFlight int64 `json:"in_flight"`
	// Truncated is true when uploads in flight on other instances were
	// left out: past 1,000 in flight (this instance's count too), or
	// past 4 MiB of their documents.
	Truncated bool `json:"truncated,omitempty"`
	// Skipped counts the uploads of other instances left out because
	// their document could not be read (not a status document, or over
	// 64 KiB).
	Skipped int `json:"skipped,omitempty"`
}

// RedisHealth is a tracker's Redis side in the admin listing.
type RedisHealth struct {
	// Up is whether Redis answers; while it does not, uploads go on
	// locally and are republished when it is back.
	Up bool `json:"up"`
	// Since is when Up last changed.
	Since time.Time `json:"since"`
	// LastError is the error that last marked Redis down, if any.
	LastError string `json:"last_error,omitempty"`
}
