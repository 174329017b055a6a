{{/* Names and labels, as `helm create` makes them. */}}
{{- define "sso-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sso-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sso-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sso-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The proxy pods; the component keeps them apart from the in-cluster Redis pods. */}}
{{- define "sso-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sso-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sso-sidecar.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sso-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: session-store
{{- end }}

{{- define "sso-sidecar.secretName" -}}
{{- if .Values.secrets.create }}{{ include "sso-sidecar.fullname" . }}{{ else }}{{ required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}{{ end }}
{{- end }}

{{/* SSO_SIDECAR_UPSTREAM: the backend container on loopback unless `upstream` says otherwise. */}}
{{- define "sso-sidecar.upstream" -}}
{{- if .Values.upstream }}{{ .Values.upstream }}
{{- else if .Values.backend.enabled }}{{ printf "http://127.0.0.1:%v" .Values.backend.port }}
{{- else }}{{ fail "upstream is required when backend.enabled is false" }}
{{- end }}
{{- end }}

{{/* The upstream's TCP port, for the NetworkPolicy when the upstream is outside the pod. */}}
{{- define "sso-sidecar.upstreamPort" -}}
{{- $u := urlParse (include "sso-sidecar.upstream" .) }}
{{- $hostPort := splitList ":" $u.host }}
{{- if gt (len $hostPort) 1 }}{{ last $hostPort }}{{ else if eq $u.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{/* The IdP's port, from oidc.endpoint (443 for https without one). */}}
{{- define "sso-sidecar.idpPort" -}}
{{- $u := urlParse .Values.oidc.endpoint }}
{{- /* The port follows the last colon, but not inside an IPv6 literal ([::1]). */}}
{{- $afterBracket := last (splitList "]" $u.host) }}
{{- $hostPort := splitList ":" $afterBracket }}
{{- if gt (len $hostPort) 1 }}{{ last $hostPort }}{{ else if eq $u.scheme "http" }}80{{ else }}443{{ end }}
{{- end }}

{{/* Whether the sidecar needs the backend's admin token. */}}
{{- define "sso-sidecar.needsAuthToken" -}}
{{- if and (eq .Values.authMode "oidc") (eq .Values.identity "openrag") }}true{{ end }}
{{- end }}

{{/* Whether the backend container mounts OpenRag's Chainlit UI: unless backend.env sets
WITH_CHAINLIT_UI to "false" (OpenRag mounts it, and imports the module that needs
CHAINLIT_AUTH_SECRET, only when the variable is "true", its default). The last entry wins, as in
the container. */}}
{{- define "sso-sidecar.chainlit" -}}
{{- if .Values.backend.enabled }}
{{- $on := true }}
{{- range .Values.backend.env }}
{{- if eq (toString .name) "WITH_CHAINLIT_UI" }}
{{- $on = ne (lower (trim (toString .value))) "false" }}
{{- end }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}
{{- end }}

{{/* Whether the chart passes CHAINLIT_AUTH_SECRET to the backend from its Secret (key
chainlit-auth-secret): with Chainlit on, unless backend.env brings its own from a Secret
(valueFrom). */}}
{{- define "sso-sidecar.chainlitSecret" -}}
{{- if include "sso-sidecar.chainlit" . }}
{{- $own := false }}
{{- range .Values.backend.env }}
{{- if eq (toString .name) "CHAINLIT_AUTH_SECRET" }}{{ $own = true }}{{ end }}
{{- end }}
{{- if not $own }}true{{ end }}
{{- end }}
{{- end }}

{{/* Reject combinations that would deploy but not work. Included by deployment.yaml. */}}
{{- define "sso-sidecar.validate" -}}
{{- if not (has .Values.authMode (list "oidc" "token")) }}
{{- fail (printf "authMode must be oidc or token, not %q" .Values.authMode) }}
{{- end }}
{{- if not (has .Values.identity (list "openrag" "headers")) }}
{{- fail (printf "identity must be openrag or headers, not %q" .Values.identity) }}
{{- end }}
{{- $r := .Values.redis }}
{{- if not (has $r.mode (list "none" "url" "inCluster" "sentinel" "cluster")) }}
{{- fail (printf "redis.mode must be none, url, inCluster, sentinel or cluster, not %q" $r.mode) }}
{{- end }}
{{- if and (eq $r.mode "url") (not (or $r.url $r.existingSecret)) }}
{{- fail "redis.mode url needs redis.url or redis.existingSecret" }}
{{- end }}
{{- if and (eq $r.mode "url") $r.url (not $r.existingSecret) (urlParse $r.url).userinfo }}
{{- fail "redis.url: no credentials in the URL (it would be a plain environment value, readable by anyone who can read the Deployment); use redis.existingSecret (the whole URL from a Secret), or redis.username and redis.passwordSecret" }}
{{- end }}
{{- if has $r.mode (list "sentinel" "cluster") }}
{{- $nodes := include "sso-sidecar.redisNodes" . }}
{{- if not $nodes }}
{{- fail (printf "redis.mode %s needs redis.%s.nodes (redis://host:port, ...)" $r.mode $r.mode) }}
{{- end }}
{{- range $i, $n := splitList "," $nodes }}
{{- if not (or (hasPrefix "redis://" $n) (hasPrefix "rediss://" $n)) }}
{{- fail (printf "redis.%s.nodes[%d] must start with redis:// or rediss://" $r.mode $i) }}
{{- end }}
{{- if (urlParse $n).userinfo }}
{{- fail (printf "redis.%s.nodes: no credentials in the URLs (they would be plain environment values); use redis.username and redis.passwordSecret%s" $r.mode (ternary ", redis.sentinel.username and redis.sentinel.passwordSecret" "" (eq $r.mode "sentinel"))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $r.mode "sentinel" }}
{{- if not $r.sentinel.master }}
{{- fail "redis.sentinel.master must not be empty" }}
{{- end }}
{{- if not (kindIs "bool" $r.sentinel.tls) }}
{{- fail "redis.sentinel.tls must be true or false" }}
{{- end }}
{{- if and $r.sentinel.passwordSecret.name (not $r.sentinel.passwordSecret.key) }}
{{- fail "redis.sentinel.passwordSecret.key is required with redis.sentinel.passwordSecret.name" }}
{{- end }}
{{- end }}
{{- if and (eq $r.mode "inCluster") (or $r.username $r.passwordSecret.name $r.caSecret.name) }}
{{- fail "redis.username, redis.passwordSecret and redis.caSecret are for an existing Redis (url, sentinel, cluster); the inCluster server has no password and no TLS" }}
{{- end }}
{{- if and $r.passwordSecret.name (not $r.passwordSecret.key) }}
{{- fail "redis.passwordSecret.key is required with redis.passwordSecret.name" }}
{{- end }}
{{- if and $r.caSecret.name (not $r.caSecret.key) }}
{{- fail "redis.caSecret.key is required with redis.caSecret.name" }}
{{- end }}
{{- if and (eq .Values.authMode "oidc") (eq $r.mode "none") (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount > 1 with redis.mode none: each pod would keep its own sessions; set redis.mode to url, inCluster, sentinel or cluster, or replicaCount to 1" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.dnsPorts) }}
{{- fail "networkPolicy.dnsPorts must list the DNS servers' port(s), e.g. [53] ([53, 5353] for OpenShift DNS): without one the DNS rule would admit every port" }}
{{- end }}
{{- include "sso-sidecar.validateDoors" . }}
{{- end }}

{{/* Whether the sidecar talks to an existing Redis (credentials and CA apply). */}}
{{- define "sso-sidecar.redisExternal" -}}
{{- if has .Values.redis.mode (list "url" "sentinel" "cluster") }}true{{ end }}
{{- end }}

{{/* SSO_SIDECAR_REDIS_NODES: the sentinels or the cluster's seed nodes, comma-separated. */}}
{{- define "sso-sidecar.redisNodes" -}}
{{- if eq .Values.redis.mode "sentinel" }}{{ join "," (compact .Values.redis.sentinel.nodes) }}
{{- else if eq .Values.redis.mode "cluster" }}{{ join "," (compact .Values.redis.cluster.nodes) }}
{{- end }}
{{- end }}

{{/* The TCP port of a redis:// or rediss:// URL (6379 when it names none). */}}
{{- define "sso-sidecar.redisUrlPort" -}}
{{- $port := regexFind ":[0-9]+$" (urlParse .).host }}
{{- if $port }}{{ trimPrefix ":" $port }}{{ else }}6379{{ end }}
{{- end }}

{{/* Redis egress ports, comma-separated: 6379 (the in-cluster server, a master the sentinels
name, cluster nodes) and the port of every configured URL (redis.url, the sentinels, the seeds). */}}
{{- define "sso-sidecar.redisPorts" -}}
{{- $ports := list "6379" }}
{{- $urls := list }}
{{- if and (eq .Values.redis.mode "url") .Values.redis.url (not .Values.redis.existingSecret) }}
{{- $urls = list .Values.redis.url }}
{{- else if has .Values.redis.mode (list "sentinel" "cluster") }}
{{- $urls = splitList "," (include "sso-sidecar.redisNodes" .) }}
{{- end }}
{{- range $urls }}
{{- $ports = append $ports (include "sso-sidecar.redisUrlPort" .) }}
{{- end }}
{{- join "," (uniq $ports) }}
{{- end }}

{{/* Refuse what would leave a door open or lock users out, rather than deploy it quietly. */}}
{{- define "sso-sidecar.validateDoors" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required: no image is published; build one from the repository's Dockerfile, push it to your registry and name it here" }}
{{- end }}
{{- $drain := add (int .Values.preStopSleepSeconds) (int .Values.config.shutdownTimeoutSecs) 5 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds + config.shutdownTimeoutSecs + 5 (%d): Kubernetes would kill the pod in the middle of its drain" (int .Values.terminationGracePeriodSeconds) (int $drain)) }}
{{- end }}
{{- if eq .Values.authMode "oidc" }}
{{- range $key, $url := dict "oidc.endpoint" .Values.oidc.endpoint "oidc.redirectUri" .Values.oidc.redirectUri }}
{{- if regexMatch "^[a-zA-Z]+://([^/@]*@)?([^/:]*\\.)?example\\.com([:/]|$)" (toString $url) }}
{{- fail (printf "%s is still the chart's example (%s): set your IdP's issuer (oidc.endpoint) and <public origin>/auth/callback (oidc.redirectUri)" $key $url) }}
{{- end }}
{{- end }}
{{- end }}
{{- $s := .Values.secrets }}
{{- if and $s.create $s.existingSecret }}
{{- fail "secrets.existingSecret is set but secrets.create is true, so it would be ignored: set secrets.create to false to use it" }}
{{- end }}
{{- if $s.create }}
{{- $oidc := eq .Values.authMode "oidc" }}
{{- if and $oidc (hasPrefix "REPLACE-ME" $s.clientSecret) }}
{{- fail "secrets.clientSecret is still the placeholder REPLACE-ME: set the client secret registered at the IdP (--set-file, or a values file kept out of git), or use secrets.existingSecret" }}
{{- end }}
{{- if and $oidc (hasPrefix "REPLACE-ME" $s.fernetKeys) }}
{{- fail "secrets.fernetKeys is still the placeholder REPLACE-ME: set the output of `sso-sidecar gen-key`, or use secrets.existingSecret" }}
{{- end }}
{{- if and (or (include "sso-sidecar.needsAuthToken" .) .Values.backend.enabled) (or (hasPrefix "REPLACE-ME" $s.authToken) (lt (len $s.authToken) 16)) }}
{{- fail "secrets.authToken is the placeholder REPLACE-ME or shorter than 16 characters: it is the backend's administrator token (AUTH_TOKEN), and anyone sending it as a Bearer token is the administrator; set a long random one, or use secrets.existingSecret" }}
{{- end }}
{{- /* Both containers read the same Secret key: the backend (AUTH_TOKEN, secretKeyRef) as it is,
the sidecar (AUTH_TOKEN_FILE) trimmed. A newline from `--set-file` would make them disagree. */}}
{{- if and (include "sso-sidecar.chainlitSecret" .) (or (not $s.chainlitAuthSecret) (hasPrefix "REPLACE-ME" (toString $s.chainlitAuthSecret))) }}
{{- fail "secrets.chainlitAuthSecret is empty or the placeholder REPLACE-ME: OpenRag's Chainlit UI (on unless WITH_CHAINLIT_UI is \"false\") signs its sessions with it (CHAINLIT_AUTH_SECRET) and, with AUTH_TOKEN set, raises at import without it, so the backend would not start; set a long random one (`openssl rand -base64 32`), or use secrets.existingSecret with a chainlit-auth-secret key, or set WITH_CHAINLIT_UI to \"false\" in backend.env to run without Chainlit" }}
{{- end }}
{{- if and (or (include "sso-sidecar.needsAuthToken" .) .Values.backend.enabled) (ne $s.authToken (trim $s.authToken)) }}
{{- fail "secrets.authToken has leading or trailing whitespace (a trailing newline from --set-file?): the backend would get AUTH_TOKEN with it and the sidecar, which trims the file it reads, without it, so every admin call would fail; write the file with `printf %s \"$TOKEN\" > auth-token` (no newline), or set the value without it" }}
{{- end }}
{{- end }}
{{- if .Values.backend.enabled }}
{{- range .Values.backend.env }}
{{- if and (eq (toString .name) "CHAINLIT_AUTH_SECRET") (hasKey . "value") }}
{{- fail "backend.env sets CHAINLIT_AUTH_SECRET as a plain value, readable by anyone who can read the Deployment: set secrets.chainlitAuthSecret (or the chainlit-auth-secret key of secrets.existingSecret) instead, which reaches the backend through secretKeyRef" }}
{{- end }}
{{- end }}
{{- end }}
{{- if kindIs "invalid" .Values.config.trustedProxies }}
{{- fail "config.trustedProxies must be set: the addresses of the proxies in front of the pods whose X-Forwarded-For is believed (e.g. the Ingress controller's pod CIDR), or [] when clients connect to the pods directly. Behind an Ingress with [], every user shares the Ingress's address, hence one rate-limit budget and one connection cap" }}
{{- end }}
{{- if and .Values.backend.enabled (not .Values.networkPolicy.enabled) (not .Values.backend.loopbackOnly) }}
{{- fail "networkPolicy.enabled is false and backend.loopbackOnly is not true: the backend container listens on every address of the pod (OpenRag binds 0.0.0.0), so anything that reaches the pod could call it without the sidecar; bind it to 127.0.0.1 (backend.command/backend.args) and set backend.loopbackOnly, or keep the NetworkPolicy" }}
{{- end }}
{{- if and (eq .Values.redis.mode "inCluster") (not .Values.networkPolicy.enabled) }}
{{- fail "redis.mode inCluster needs networkPolicy.enabled: the in-cluster Redis has no password, and its own NetworkPolicy is what keeps other pods from reading or flushing the sessions and tokens" }}
{{- end }}
{{- $bridge := and (eq .Values.authMode "oidc") (eq .Values.identity "openrag") }}
{{- $volatile := has .Values.redis.mode (list "none" "inCluster") }}
{{- $recovers := regexMatch "(?m)^\\s*(openrag\\.)?token_policy\\s*=\\s*[\"'](regenerate|file)[\"']" .Values.config.extra }}
{{- /* A variable in extraEnv overrides the file (the binary reads variables over TOML), either way. */}}
{{- range .Values.extraEnv }}
{{- if eq (toString .name) "SSO_SIDECAR_OPENRAG__TOKEN_POLICY" }}
{{- $recovers = has (lower (trim (toString .value))) (list "regenerate" "file") }}
{{- end }}
{{- end }}
{{- if and $bridge $volatile (not $recovers) (not .Values.acceptVolatileTokenVault) }}
{{- fail (printf "identity openrag keeps each user's OpenRag token in the session store, and with redis.mode %s a restart forgets every one: under [openrag] token_policy \"deny\" (the default) every returning user is then refused. Use a persistent Redis (redis.mode url, sentinel or cluster), or set token_policy to \"regenerate\" or \"file\" in config.extra (or SSO_SIDECAR_OPENRAG__TOKEN_POLICY in extraEnv, which wins over it), or set acceptVolatileTokenVault: true" .Values.redis.mode) }}
{{- end }}
{{- end }}
