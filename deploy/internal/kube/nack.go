package kube

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NACK's Go module brings a NATS server and Kubernetes client along, so its
// jetstream.nats.io/v1beta2 Stream and Consumer specs are mirrored here from
// its CRDs (nats-io/nack deploy/crds.yml, v0.22). A field NACK has and this
// mirror lacks fails decoding: add it here after checking NACK's CRD.

// Stream is jetstream.nats.io/v1beta2 Stream.
type Stream struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              StreamSpec `json:"spec"`
}

// StreamSpec is a NACK Stream's spec. Durations are Go duration strings.
// Defaults (applied by the CRD when a field is left out) differ from
// JetStream's: storage memory, discard old, retention limits, and -1 for the
// max* limits.
type StreamSpec struct {
	Name                   string            `json:"name"`
	Description            string            `json:"description,omitempty"`
	Subjects               []string          `json:"subjects,omitempty"`
	Retention              string            `json:"retention,omitempty"`
	MaxConsumers           *int              `json:"maxConsumers,omitempty"`
	MaxMsgsPerSubject      int               `json:"maxMsgsPerSubject,omitempty"`
	MaxMsgs                *int              `json:"maxMsgs,omitempty"`
	MaxBytes               *int              `json:"maxBytes,omitempty"`
	MaxAge                 string            `json:"maxAge,omitempty"`
	MaxMsgSize             *int              `json:"maxMsgSize,omitempty"`
	Storage                string            `json:"storage,omitempty"`
	Discard                string            `json:"discard,omitempty"`
	Replicas               int               `json:"replicas,omitempty"`
	NoAck                  bool              `json:"noAck,omitempty"`
	DuplicateWindow        string            `json:"duplicateWindow,omitempty"`
	Placement              *StreamPlacement  `json:"placement,omitempty"`
	Mirror                 *StreamSource     `json:"mirror,omitempty"`
	Sources                []*StreamSource   `json:"sources,omitempty"`
	Compression            string            `json:"compression,omitempty"`
	SubjectTransform       *SubjectTransform `json:"subjectTransform,omitempty"`
	RePublish              *RePublish        `json:"republish,omitempty"`
	Sealed                 bool              `json:"sealed,omitempty"`
	DenyDelete             bool              `json:"denyDelete,omitempty"`
	DenyPurge              bool              `json:"denyPurge,omitempty"`
	AllowDirect            bool              `json:"allowDirect,omitempty"`
	AllowRollup            bool              `json:"allowRollup,omitempty"`
	MirrorDirect           bool              `json:"mirrorDirect,omitempty"`
	DiscardPerSubject      bool              `json:"discardPerSubject,omitempty"`
	FirstSequence          uint64            `json:"firstSequence,omitempty"`
	Metadata               map[string]string `json:"metadata,omitempty"`
	ConsumerLimits         *ConsumerLimits   `json:"consumerLimits,omitempty"`
	AllowMsgTTL            bool              `json:"allowMsgTtl,omitempty"`
	SubjectDeleteMarkerTTL string            `json:"subjectDeleteMarkerTtl,omitempty"`
	Connection
}

// StreamPlacement places a stream in a cluster.
type StreamPlacement struct {
	Cluster string   `json:"cluster,omitempty"`
	Tags    []string `json:"tags,omitempty"`
}

// StreamSource is a mirror or source of a stream.
type StreamSource struct {
	Name                  string              `json:"name"`
	OptStartSeq           int                 `json:"optStartSeq,omitempty"`
	OptStartTime          string              `json:"optStartTime,omitempty"`
	FilterSubject         string              `json:"filterSubject,omitempty"`
	ExternalAPIPrefix     string              `json:"externalApiPrefix,omitempty"`
	ExternalDeliverPrefix string              `json:"externalDeliverPrefix,omitempty"`
	SubjectTransforms     []*SubjectTransform `json:"subjectTransforms,omitempty"`
}

// SubjectTransform maps subjects.
type SubjectTransform struct {
	Source string `json:"source"`
	Dest   string `json:"dest"`
}

// RePublish republishes stored messages.
type RePublish struct {
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination"`
	HeadersOnly bool   `json:"headers_only,omitempty"`
}

// ConsumerLimits are defaults for a stream's consumers.
type ConsumerLimits struct {
	InactiveThreshold string `json:"inactiveThreshold,omitempty"`
	MaxAckPending     int    `json:"maxAckPending,omitempty"`
}

// Consumer is jetstream.nats.io/v1beta2 Consumer.
type Consumer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ConsumerSpec `json:"spec"`
}

// ConsumerSpec is a NACK Consumer's spec. The CRD defaults ackPolicy to
// none and ackWait to 1ns: both must always be set for agentrelay.
type ConsumerSpec struct {
	StreamName         string            `json:"streamName"`
	DurableName        string            `json:"durableName"`
	Description        string            `json:"description,omitempty"`
	DeliverPolicy      string            `json:"deliverPolicy,omitempty"`
	OptStartSeq        int               `json:"optStartSeq,omitempty"`
	OptStartTime       string            `json:"optStartTime,omitempty"`
	DeliverSubject     string            `json:"deliverSubject,omitempty"`
	DeliverGroup       string            `json:"deliverGroup,omitempty"`
	AckPolicy          string            `json:"ackPolicy,omitempty"`
	AckWait            string            `json:"ackWait,omitempty"`
	MaxDeliver         *int              `json:"maxDeliver,omitempty"`
	BackOff            []string          `json:"backoff,omitempty"`
	FilterSubject      string            `json:"filterSubject,omitempty"`
	FilterSubjects     []string          `json:"filterSubjects,omitempty"`
	ReplayPolicy       string            `json:"replayPolicy,omitempty"`
	SampleFreq         string            `json:"sampleFreq,omitempty"`
	MaxWaiting         int               `json:"maxWaiting,omitempty"`
	RateLimitBps       int               `json:"rateLimitBps,omitempty"`
	MaxAckPending      int               `json:"maxAckPending,omitempty"`
	FlowControl        bool              `json:"flowControl,omitempty"`
	HeadersOnly        bool              `json:"headersOnly,omitempty"`
	HeartbeatInterval  string            `json:"heartbeatInterval,omitempty"`
	MaxRequestBatch    int               `json:"maxRequestBatch,omitempty"`
	MaxRequestExpires  string            `json:"maxRequestExpires,omitempty"`
	MaxRequestMaxBytes int               `json:"maxRequestMaxBytes,omitempty"`
	InactiveThreshold  string            `json:"inactiveThreshold,omitempty"`
	Replicas           int               `json:"replicas,omitempty"`
	MemStorage         bool              `json:"memStorage,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	PauseUntil         string            `json:"pauseUntil,omitempty"`
	PriorityPolicy     string            `json:"priorityPolicy,omitempty"`
	PinnedTTL          string            `json:"pinnedTtl,omitempty"`
	PriorityGroups     []string          `json:"priorityGroups,omitempty"`
	Connection
}

// Connection is how NACK reaches NATS for one resource, when not through
// its default or an Account.
type Connection struct {
	Account       string   `json:"account,omitempty"`
	Creds         string   `json:"creds,omitempty"`
	Nkey          string   `json:"nkey,omitempty"`
	Servers       []string `json:"servers,omitempty"`
	TLS           *NACKTLS `json:"tls,omitempty"`
	TLSFirst      bool     `json:"tlsFirst,omitempty"`
	PreventDelete bool     `json:"preventDelete,omitempty"`
	PreventUpdate bool     `json:"preventUpdate,omitempty"`
}

// NACKTLS holds client TLS files mounted into NACK.
type NACKTLS struct {
	ClientCert string   `json:"clientCert,omitempty"`
	ClientKey  string   `json:"clientKey,omitempty"`
	RootCAs    []string `json:"rootCas,omitempty"`
}
