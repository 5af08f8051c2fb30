package jetbridge

// Version is this library's version. Services advertise it as the
// jetbridge.sdk metadata (go/<Version>) so that operators can tell replicas
// apart in `nats micro info`.
const Version = "0.1.0"
