// Generated from src-tauri/src/model.rs by `cargo test` (UPDATE_TYPES=1). Do not edit.

export type Snapshot = { 
/**
 * [`SCHEMA_VERSION`] of the sampler that produced this snapshot.
 */
schema_version: number, 
/**
 * The machine this snapshot describes.
 */
host: HostInfo, 
/**
 * When the sample was taken (UTC).
 */
taken_at: string, 
/**
 * Per-sampler sequence number, increasing by one per snapshot. Together with the
 * host it names a snapshot, which makes uploads idempotent.
 */
seq: number, 
/**
 * Time covered by the rates and CPU figures: since the previous sample, in ms.
 */
interval_ms: number, 
/**
 * Processor use.
 */
cpu: CpuSample, 
/**
 * Memory and swap.
 */
memory: MemorySample, 
/**
 * Every process, in pid order.
 */
processes: Array<ProcessSample>, 
/**
 * Every TCP and UDP socket, IPv4 and IPv6.
 */
connections: Array<ConnectionSample>, 
/**
 * Network interface counters and rates.
 */
network: NetworkSample, 
/**
 * Connections per local port and the listening ports.
 */
ports: PortUsage, 
/**
 * Parts that could not be measured this time (e.g. sockets of other users without
 * privileges). The rest of the snapshot is still valid.
 */
errors: Array<DomainError>, 
/**
 * The machine's GPUs; absent where it has none (or none that Procyon can read).
 */
gpus?: Array<GpuSample>, 
/**
 * Mounted filesystems, by mount point (pseudo and duplicate mounts left out).
 * Absent where not measured (an upload, an older agent, an OS not read yet); empty
 * when measured and there are none. Read every few seconds, carried over between.
 */
filesystems?: Array<FilesystemSample>, 
/**
 * I/O of each whole disk over the last interval; absent as for `filesystems`.
 */
disks?: Array<DiskSample>, 
/**
 * Temperature sensors; absent as for `filesystems`, empty on a machine without any
 * (most virtual machines).
 */
temperatures?: Array<TemperatureSample>, 
/**
 * Fans; absent as for `filesystems`.
 */
fans?: Array<FanSample>, 
/**
 * Batteries; absent as for `filesystems`, empty on a machine without one.
 */
batteries?: Array<BatterySample>, };

export type HostInfo = { 
/**
 * Stable machine identifier (`/etc/machine-id` where there is one), else the
 * hostname.
 */
id: string, 
/**
 * Host name as the machine reports it (or as the agent was told to report it).
 */
hostname: string, 
/**
 * Operating system name and version, e.g. `"Debian GNU/Linux 12"`.
 */
os: string, 
/**
 * Kernel version, e.g. `"6.1.0-18-amd64"`.
 */
kernel: string | null, 
/**
 * CPU architecture, e.g. `"x86_64"`.
 */
arch: string, 
/**
 * CPU model name.
 */
cpu_model: string | null, 
/**
 * Logical processors (`null` when not known, as in uploads that do not say).
 */
logical_cores: number | null, 
/**
 * Physical memory in bytes (`null` when not known).
 */
memory_total_bytes: number | null, 
/**
 * When the machine booted (UTC; `null` when not known).
 */
boot_time: string | null, 
/**
 * Version of the Procyon program that sampled it.
 */
agent_version: string, };

export type GpuSample = { 
/**
 * Which one: its PCI address (`0000:03:00.0`) where it has one, else the DRM card
 * (`card0`) or NVML's index (`nvml0`).
 */
id: string, 
/**
 * What it is called: the model name where the driver gives one, else the vendor
 * and the PCI device id.
 */
name: string, 
/**
 * The kernel driver (`amdgpu`, `i915`, `xe`, `nvidia`, ...), where known.
 */
driver: string | null, 
/**
 * Busy share over the last interval, 0-100; `null` when the driver does not say
 * and no process's use could be added up.
 */
utilization_percent: number | null, 
/**
 * Its own memory (VRAM) in use, where known.
 */
memory_used_bytes: number | null, 
/**
 * Its own memory (VRAM) in all, where known (integrated GPUs have none of their own).
 */
memory_total_bytes: number | null, 
/**
 * Temperature in °C, where a sensor reports it.
 */
temperature_celsius: number | null, };

export type CpuSample = { 
/**
 * All cores together, 0-100.
 */
total_percent: number, 
/**
 * One entry per logical core, 0-100 each.
 */
per_core_percent: Array<number>, 
/**
 * Run-queue load averages; `null` where the OS has none (Windows).
 */
load_average: LoadAverage | null, };

export type LoadAverage = { 
/**
 * Over one minute.
 */
one: number, 
/**
 * Over five minutes.
 */
five: number, 
/**
 * Over fifteen minutes.
 */
fifteen: number, };

export type MemorySample = { 
/**
 * Physical memory; `null` when not known.
 */
total_bytes: number | null, 
/**
 * In use (total minus available). For a short upload, which gives no memory
 * figures, the sum of its processes' resident memory.
 */
used_bytes: number, 
/**
 * Available to new work without swapping, caches included; `null` when not known.
 */
available_bytes: number | null, 
/**
 * Swap space; `null` when not known.
 */
swap_total_bytes: number | null, 
/**
 * Swap in use; `null` when not known.
 */
swap_used_bytes: number | null, };

export type ProcessSample = { 
/**
 * Process id.
 */
pid: number, 
/**
 * Parent's process id; `null` for roots (pid 1, kernel roots).
 */
ppid: number | null, 
/**
 * Short name (the executable's name as the kernel knows it).
 */
name: string, 
/**
 * Command line, arguments joined by spaces, secrets replaced by `***`, at most
 * [`MAX_CMD_CHARS`] characters. Empty for kernel threads.
 */
cmd: string, 
/**
 * Owner's user name; the numeric uid when it has no name; `null` if unknown.
 */
user: string | null, 
/**
 * Scheduler state.
 */
status: ProcessStatus, 
/**
 * Share of one core over the last interval (can exceed 100 with several threads);
 * `null` when not known (an upload that does not give it).
 */
cpu_percent: number | null, 
/**
 * Resident memory as a share of physical memory, 0-100; `null` when not known.
 */
memory_percent: number | null, 
/**
 * Resident set size; `null` when not known.
 */
rss_bytes: number | null, 
/**
 * Virtual memory size; `null` when not known.
 */
virtual_bytes: number | null, 
/**
 * Number of threads.
 */
threads: number | null, 
/**
 * When the process started (UTC). With the pid it names this process: a pid that
 * is reused gets a different start time. `null` when not known (a short upload):
 * such a process cannot be told from a later one with its pid, so nothing acts on
 * it by pid alone.
 */
start_time: string | null, 
/**
 * Bytes read from storage since the process started; `null` without permission.
 */
disk_read_bytes: number | null, 
/**
 * Bytes written to storage since the process started; `null` without permission.
 */
disk_write_bytes: number | null, 
/**
 * Storage read rate over the last interval.
 */
disk_read_bytes_per_sec: number | null, 
/**
 * Storage write rate over the last interval.
 */
disk_write_bytes_per_sec: number | null, 
/**
 * A kernel thread: it has no command line and cannot be signalled.
 */
kernel_thread: boolean, 
/**
 * The container it runs in, from its control group (read once per process);
 * absent when it is in none, and in snapshots of agents that predate it.
 */
container?: ContainerRef, 
/**
 * GPU use over the last interval, 0-100: the busiest engine (render, compute,
 * video, ...) of any GPU it used, as a share of that engine's time. Absent where
 * the machine has no GPU or the process holds none (see `sample/gpu.rs`).
 */
gpu_percent?: number, 
/**
 * GPU memory the process holds, over all its GPUs; absent as `gpu_percent` is.
 */
gpu_memory_bytes?: number, };

export type ProcessStatus = "running" | "sleeping" | "disk_sleep" | "stopped" | "tracing_stop" | "zombie" | "dead" | "idle" | "parked" | "waking" | "unknown";

export type ConnectionSample = { 
/**
 * Transport protocol.
 */
protocol: Protocol, 
/**
 * Local IP address (IPv4 or IPv6).
 */
local_address: string, 
/**
 * Local port.
 */
local_port: number, 
/**
 * Remote IP address; `null` for unconnected UDP sockets.
 */
remote_address: string | null, 
/**
 * Remote port; `null` for unconnected UDP sockets.
 */
remote_port: number | null, 
/**
 * TCP state; `null` for UDP.
 */
state: TcpState | null, 
/**
 * Owning process; `null` when it is not known (no permission, or a socket in
 * TIME_WAIT that no process holds any more).
 */
pid: number | null, };

export type Protocol = "tcp" | "udp";

export type TcpState = "ESTABLISHED" | "SYN_SENT" | "SYN_RECV" | "FIN_WAIT1" | "FIN_WAIT2" | "TIME_WAIT" | "CLOSE" | "CLOSE_WAIT" | "LAST_ACK" | "LISTEN" | "CLOSING" | "DELETE_TCB" | "UNKNOWN";

export type NetworkSample = { 
/**
 * Sum over the interfaces, loopback excluded; `null` when not known (an upload
 * that gives no network figures).
 */
total: InterfaceCounters | null, 
/**
 * Each interface, loopback included, by name.
 */
interfaces: Array<InterfaceSample>, };

export type InterfaceSample = { 
/**
 * Interface name, e.g. `"eth0"`.
 */
name: string, 
/**
 * Its counters.
 */
counters: InterfaceCounters, };

export type InterfaceCounters = { 
/**
 * Bytes sent.
 */
sent_bytes: number, 
/**
 * Bytes received.
 */
received_bytes: number, 
/**
 * Packets sent.
 */
sent_packets: number, 
/**
 * Packets received.
 */
received_packets: number, 
/**
 * Receive errors.
 */
errors_in: number, 
/**
 * Transmit errors.
 */
errors_out: number, 
/**
 * Received packets dropped; `null` where the OS does not count them.
 */
drops_in: number | null, 
/**
 * Outgoing packets dropped; `null` where the OS does not count them.
 */
drops_out: number | null, 
/**
 * Send rate over the last interval.
 */
sent_bytes_per_sec: number, 
/**
 * Receive rate over the last interval.
 */
received_bytes_per_sec: number, 
/**
 * Packets sent per second over the last interval.
 */
sent_packets_per_sec: number, 
/**
 * Packets received per second over the last interval.
 */
received_packets_per_sec: number, };

export type PortUsage = { 
/**
 * Sockets per local port and protocol, most used first.
 */
by_local_port: Array<PortCount>, 
/**
 * Listening TCP sockets and bound UDP sockets with their process.
 */
listening: Array<ListeningPort>, };

export type PortCount = { 
/**
 * Protocol.
 */
protocol: Protocol, 
/**
 * Local port.
 */
port: number, 
/**
 * Sockets on it.
 */
connections: number, };

export type ListeningPort = { 
/**
 * Protocol.
 */
protocol: Protocol, 
/**
 * Address it is bound to (`0.0.0.0` or `::` for every address).
 */
address: string, 
/**
 * Port.
 */
port: number, 
/**
 * Owning process, when known.
 */
pid: number | null, 
/**
 * Owning process's name, when known.
 */
process_name: string | null, };

export type FilesystemSample = { 
/**
 * Where it is mounted, e.g. `"/"` or `"/home"`.
 */
mount_point: string, 
/**
 * Filesystem type, e.g. `"ext4"`, `"xfs"`, `"nfs4"`.
 */
fs_type: string, 
/**
 * What is mounted, as the mount table names it (e.g. `"/dev/nvme0n1p2"`).
 */
device: string, 
/**
 * Size in bytes.
 */
total_bytes: number, 
/**
 * Bytes in use.
 */
used_bytes: number, 
/**
 * Bytes free for ordinary users (without the blocks reserved for root): `df`'s
 * "Avail", so `used / (used + free)` is `df`'s "Use%".
 */
free_bytes: number, 
/**
 * Inodes in all; `null` where the filesystem has no fixed number (btrfs says 0).
 */
inodes_total: number | null, 
/**
 * Inodes free; `null` as for `inodes_total`.
 */
inodes_free: number | null, };

export type DiskSample = { 
/**
 * Kernel name of the disk, e.g. `"nvme0n1"`, `"sda"`, `"dm-0"`.
 */
name: string, 
/**
 * Bytes read per second.
 */
read_bytes_per_sec: number, 
/**
 * Bytes written per second.
 */
write_bytes_per_sec: number, 
/**
 * Reads completed per second.
 */
reads_per_sec: number, 
/**
 * Writes completed per second.
 */
writes_per_sec: number, 
/**
 * Share of the interval the disk had I/O in flight, 0-100 (`iostat`'s `%util`).
 */
busy_percent: number, };

export type TemperatureSample = { 
/**
 * The chip and the sensor's label, e.g. `"coretemp Package id 0"`, `"nvme Composite"`.
 */
name: string, 
/**
 * Degrees Celsius.
 */
celsius: number, 
/**
 * The level the chip calls high; `null` where it names none.
 */
high_celsius: number | null, 
/**
 * The level the chip calls critical; `null` where it names none.
 */
critical_celsius: number | null, };

export type FanSample = { 
/**
 * The chip and the fan's label, e.g. `"nct6775 fan2"`.
 */
name: string, 
/**
 * Revolutions per minute.
 */
rpm: number, };

export type BatterySample = { 
/**
 * Its name, e.g. `"BAT0"`.
 */
name: string, 
/**
 * Charge, 0-100; `null` where it does not say.
 */
percent: number | null, 
/**
 * `"charging"`, `"discharging"`, `"full"`, `"not charging"` or `"unknown"`.
 */
status: string, 
/**
 * Power drawn or charged, in watts; `null` where it does not say.
 */
power_watts: number | null, };

export type DomainError = { 
/**
 * Which part.
 */
domain: Domain, 
/**
 * What went wrong, in words.
 */
message: string, };

export type Domain = "processes" | "connections" | "network";

export type ProcessAction = "suspend" | "resume" | "terminate" | "kill";

export type ActionError = { 
/**
 * What kind of failure, for code to branch on.
 */
code: ActionErrorCode, 
/**
 * A sentence for a person, saying what happened and what to do about it.
 */
message: string, };

export type ActionErrorCode = "not_found" | "permission_denied" | "protected" | "pid_reused" | "unsupported" | "failed";

export type Role = "viewer" | "operator" | "admin";

export type LoginResponse = { 
/**
 * Bearer token for `Authorization: Bearer ...` (and `?token=` on WebSockets).
 */
token: string, 
/**
 * When the token stops working.
 */
expires_at: string, 
/**
 * The user's role.
 */
role: Role, 
/**
 * The user's name.
 */
username: string, };

export type HostSummary = { 
/**
 * The collector's id for the host (usable wherever a `server_id` is).
 */
id: number, 
/**
 * Host name, unique per collector.
 */
hostname: string, 
/**
 * Facts from its newest snapshot; `null` for hosts that uploaded the short
 * (seed-style) format only.
 */
info: HostInfo | null, 
/**
 * First upload.
 */
first_seen: string, 
/**
 * Newest upload.
 */
last_seen: string, 
/**
 * Reporting now: an agent is connected, or it uploaded within the last three
 * intervals.
 */
online: boolean, 
/**
 * The collector's own machine.
 */
local: boolean, 
/**
 * Stored full snapshots.
 */
snapshot_count: number, 
/**
 * The host's labels: its agent's (`--label`), with those an admin set laid over
 * them key by key (see [`super::labels`]).
 */
labels: Record<string, string>, 
/**
 * The labels an admin set (`PUT /api/hosts/{server_id}/labels`), which win over
 * the agent's for their keys.
 */
admin_labels: Record<string, string>, 
/**
 * The figures of its newest snapshot while the collector holds it live (the host
 * reports now, or did lately); `null` otherwise.
 */
figures: HostFigures | null, };

export type HostFigures = { 
/**
 * When the snapshot was taken.
 */
taken_at: string, 
/**
 * CPU of all cores together, 0-100.
 */
cpu_percent: number, 
/**
 * The last few CPU figures, oldest first, newest last (for a sparkline): as many
 * as the collector saw since the host came online, up to [`CPU_TREND_POINTS`].
 */
cpu_trend: Array<number>, 
/**
 * Memory in use.
 */
memory_used_bytes: number, 
/**
 * Physical memory; `null` when not known.
 */
memory_total_bytes: number | null, 
/**
 * Swap in use; `null` when not known.
 */
swap_used_bytes: number | null, 
/**
 * Swap space; `null` when not known.
 */
swap_total_bytes: number | null, 
/**
 * One-minute load average; `null` where the OS has none.
 */
load_one: number | null, 
/**
 * Bytes received per second over all interfaces but loopback; `null` when not known.
 */
received_bytes_per_sec: number | null, 
/**
 * Bytes sent per second; `null` when not known.
 */
sent_bytes_per_sec: number | null, 
/**
 * Processes.
 */
process_count: number, 
/**
 * The process using the most CPU; `null` for a snapshot without processes.
 */
busiest: BusiestProcess | null, 
/**
 * The host's GPUs, as its snapshot lists them; absent where it has none.
 */
gpus?: Array<GpuSample>, };

export type BusiestProcess = { 
/**
 * Process id.
 */
pid: number, 
/**
 * Its name (from the monitored machine: show it as text).
 */
name: string, 
/**
 * Its CPU, 100 = one core.
 */
cpu_percent: number, };

export type FleetRow = { 
/**
 * Host name.
 */
hostname: string, 
/**
 * Reporting now.
 */
online: boolean, 
/**
 * Newest snapshot received; `null` when the collector has none in memory.
 */
last_seen: string | null, 
/**
 * Figures of its newest snapshot; `null` while it has none live. The trend holds
 * the newest figure only: a reader appends it to what it has.
 */
figures: HostFigures | null, };

export type FleetUpdate = { "type": "rows", 
/**
 * One row per host that changed.
 */
rows: Array<FleetRow>, };

export type HostLabels = { 
/**
 * Labels by key; `{}` removes every label an admin set.
 */
labels: Record<string, string>, };

export type SnapshotSummary = { 
/**
 * Id for `GET /api/process-snapshots/{id}/`.
 */
snapshot_id: number, 
/**
 * Host name.
 */
hostname: string, 
/**
 * When it was taken.
 */
timestamp: string, 
/**
 * The sampler's sequence number.
 */
seq: number, 
/**
 * CPU in total.
 */
cpu_percent: number, 
/**
 * Memory in use.
 */
memory_used_bytes: number, 
/**
 * Physical memory; `null` when the snapshot does not say (a short upload).
 */
memory_total_bytes: number | null, 
/**
 * Processes.
 */
process_count: number, 
/**
 * Sockets.
 */
connection_count: number, };

export type Tier = "raw" | "minute" | "hour";

export type Series = { 
/**
 * Host name.
 */
hostname: string, 
/**
 * Granularity the collector chose for the requested range.
 */
tier: Tier, 
/**
 * Points, oldest first.
 */
points: Array<SeriesPoint>, };

export type SeriesPoint = { 
/**
 * Snapshot time, or the bucket's start.
 */
timestamp: string, 
/**
 * Snapshots behind this point.
 */
samples: number, 
/**
 * Average CPU in total.
 */
cpu_percent: number, 
/**
 * Peak CPU in total.
 */
cpu_max_percent: number, 
/**
 * Average memory in use.
 */
memory_used_bytes: number, 
/**
 * Peak memory in use.
 */
memory_max_bytes: number, 
/**
 * Average process count.
 */
process_count: number, 
/**
 * Peak process count.
 */
process_max: number, 
/**
 * Average send rate; `null` when no snapshot behind the point gave network figures
 * (short uploads give none).
 */
sent_bytes_per_sec: number | null, 
/**
 * Average receive rate; `null` as for the send rate.
 */
received_bytes_per_sec: number | null, 
/**
 * Peak send rate; `null` as for the average.
 */
sent_max_bytes_per_sec: number | null, 
/**
 * Peak receive rate; `null` as for the average.
 */
received_max_bytes_per_sec: number | null, 
/**
 * Average bytes read per second by the disks together (see
 * `Snapshot::disk_io_bytes_per_sec`); `null` when no snapshot behind the point
 * measured disk I/O.
 */
disk_read_bytes_per_sec: number | null, 
/**
 * Average bytes written per second; `null` as for reads.
 */
disk_write_bytes_per_sec: number | null, 
/**
 * Peak read rate; `null` as for the average.
 */
disk_read_max_bytes_per_sec: number | null, 
/**
 * Peak write rate; `null` as for the average.
 */
disk_write_max_bytes_per_sec: number | null, 
/**
 * Average of the hottest sensor's temperature, °C; `null` when no snapshot behind
 * the point had a temperature.
 */
temperature_celsius: number | null, 
/**
 * Peak of the hottest sensor's temperature, °C; `null` as for the average.
 */
temperature_max_celsius: number | null, };

export type ProcessSearch = { 
/**
 * The query as given.
 */
query: string, 
/**
 * Hosts with at least one match, by host name.
 */
hosts: Array<ProcessSearchHost>, 
/**
 * Hosts whose newest snapshot was searched.
 */
hosts_searched: number, 
/**
 * Matching processes on the hosts searched (returned or not).
 */
matched: number, 
/**
 * Matching processes in `hosts`: at most `limit`.
 */
returned: number, 
/**
 * The search stopped at `limit`; `next_hostname` is where to go on.
 */
truncated: boolean, 
/**
 * The first host not searched, for `from_hostname` (when `truncated`).
 */
next_hostname: string | null, };

export type ProcessSearchHost = { 
/**
 * The collector's id for the host (a `server_id`).
 */
host_id: number, 
/**
 * Host name.
 */
hostname: string, 
/**
 * Reporting now.
 */
online: boolean, 
/**
 * The snapshot searched (`GET /api/process-snapshots/{id}/`).
 */
snapshot_id: number, 
/**
 * When that snapshot was taken.
 */
taken_at: string, 
/**
 * Matching processes on this host (more than `processes` when the search stopped at
 * its limit).
 */
matched: number, 
/**
 * The matching processes, in pid order.
 */
processes: Array<ProcessSample>, };

export type TopProcess = { 
/**
 * Process name.
 */
name: string, 
/**
 * Its pid when it peaked.
 */
pid: number, 
/**
 * Its command line when it peaked.
 */
cmd: string, 
/**
 * Peak CPU (share of one core); `null` when no snapshot in the range said (short
 * uploads may leave it out).
 */
cpu_max_percent: number | null, 
/**
 * Peak resident memory; `null` as for the CPU.
 */
rss_max_bytes: number | null, 
/**
 * When the CPU peak was seen; `null` when the CPU is not known.
 */
cpu_peak_at: string | null, 
/**
 * When the memory peak was seen; `null` when the memory is not known.
 */
rss_peak_at: string | null, };

export type ProcessHistoryPoint = { 
/**
 * Snapshot time.
 */
timestamp: string, 
/**
 * CPU (share of one core); `null` when the snapshot does not say.
 */
cpu_percent: number | null, 
/**
 * Resident memory; `null` when the snapshot does not say.
 */
rss_bytes: number | null, 
/**
 * Resident memory as a share of physical memory; `null` when not known.
 */
memory_percent: number | null, };

export type AuditAction = "suspend" | "resume" | "terminate" | "kill" | "delete_host" | "bind_machine" | "bind_host" | "unbind_host" | "alert_rule" | "alert_channel" | "silence" | "details" | "dashboard" | "host_labels";

export type AuditEntry = { 
/**
 * Entry id.
 */
id: number, 
/**
 * When.
 */
at: string, 
/**
 * Who (user name).
 */
actor: string, 
/**
 * On which host (host name).
 */
hostname: string, 
/**
 * Target pid (`null` for an action on the host itself).
 */
pid: number | null, 
/**
 * Target's name, when known.
 */
process_name: string | null, 
/**
 * What was attempted.
 */
action: AuditAction, 
/**
 * Whether a whole subtree was targeted.
 */
tree: boolean, 
/**
 * `"success"`, or the error code (`"permission_denied"`, ...).
 */
result: string, 
/**
 * What happened, in words.
 */
message: string, };

export type BulkTarget = { 
/**
 * Process id.
 */
pid: number, 
/**
 * Its start time as the caller's snapshot showed it (required).
 */
start_time: string, };

export type BulkActionRequest = { 
/**
 * The processes, 1 to [`MAX_BULK_TARGETS`], each pid at most once.
 */
targets: Array<BulkTarget>, };

export type BulkResult = { 
/**
 * Process id, as asked.
 */
pid: number, 
/**
 * `"success"`, or the refusal's code (`"pid_reused"`, `"not_found"`, `"protected"`,
 * ...), as the audit log records it.
 */
status: string, 
/**
 * Why it was refused or failed, in words; `null` on success.
 */
error: string | null, };

export type BulkActionResponse = { 
/**
 * The outcomes.
 */
results: Array<BulkResult>, };

export type UserSummary = { 
/**
 * User id.
 */
id: number, 
/**
 * Login name.
 */
username: string, 
/**
 * Role.
 */
role: Role, 
/**
 * When the account was made.
 */
created_at: string, };

export type ProcessDetails = { 
/**
 * Process id.
 */
pid: number, 
/**
 * Short name.
 */
name: string, 
/**
 * When the process started (what actions name it by).
 */
start_time: string | null, 
/**
 * When these details were read.
 */
read_at: string, 
/**
 * The program file it runs, as the kernel knows it.
 */
executable: string | null, 
/**
 * Its working directory.
 */
cwd: string | null, 
/**
 * Its threads, at most [`MAX_DETAIL_THREADS`], busiest first.
 */
threads: Array<ThreadDetail> | null, 
/**
 * How many threads it has in all.
 */
threads_total: number | null, 
/**
 * Its open descriptors, at most [`MAX_DETAIL_FILES`], by descriptor number.
 */
files: Array<OpenFile> | null, 
/**
 * How many descriptors it has open in all.
 */
files_total: number | null, 
/**
 * Its memory mappings, summed up.
 */
memory_maps: MemoryMaps | null, 
/**
 * Its resource limits.
 */
limits: Array<ResourceLimit> | null, 
/**
 * Its control group paths (one line of `/proc/PID/cgroup` each).
 */
cgroups: Array<string> | null, 
/**
 * The container it runs in, when its control group says so.
 */
container: ContainerRef | null, 
/**
 * The names of its environment variables, sorted, at most
 * [`MAX_DETAIL_ENV_NAMES`]; never their values, which may be secrets.
 */
environment_names: Array<string> | null, 
/**
 * Parts that could not be read, and why (e.g. permission denied).
 */
unavailable: Array<UnavailablePart>, };

export type ThreadDetail = { 
/**
 * Thread id.
 */
tid: number, 
/**
 * Its name (`comm`).
 */
name: string, 
/**
 * Its scheduler state: `running`, `sleeping`, `disk_sleep`, `stopped`, `zombie`, ...
 */
state: string, 
/**
 * Share of one core over the short time the details were measured in; `null` if
 * the thread ended meanwhile.
 */
cpu_percent: number | null, 
/**
 * CPU time used since it started, user and system, in seconds.
 */
cpu_seconds: number, };

export type OpenFile = { 
/**
 * The descriptor number.
 */
fd: number, 
/**
 * What it is.
 */
kind: FileKind, 
/**
 * The file's path, or what the kernel names the object (`pipe:[123]`,
 * `anon_inode:[eventfd]`).
 */
target: string, 
/**
 * For a socket: its protocol and addresses, when found in the process's network
 * namespace (`tcp 127.0.0.1:8080 LISTEN`).
 */
socket: string | null, };

export type FileKind = "file" | "pipe" | "socket" | "anon_inode" | "other";

export type MemoryMaps = { 
/**
 * How many mappings there are.
 */
count: number, 
/**
 * Distinct files mapped (the program and its libraries, mostly).
 */
files: number, 
/**
 * Mapped size backed by files.
 */
file_bytes: number, 
/**
 * Mapped size not backed by a file (heap, anonymous, stacks).
 */
anonymous_bytes: number, 
/**
 * Size of the heap mapping.
 */
heap_bytes: number, 
/**
 * Size of the main thread's stack mapping.
 */
stack_bytes: number, };

export type ResourceLimit = { 
/**
 * What it limits, as the kernel words it (`Max open files`).
 */
name: string, 
/**
 * The soft limit; `null` for unlimited.
 */
soft: number | null, 
/**
 * The hard limit; `null` for unlimited.
 */
hard: number | null, 
/**
 * The unit (`bytes`, `seconds`, `files`, ...), when the kernel gives one.
 */
unit: string | null, };

export type ContainerRef = { 
/**
 * Which runtime's naming the control group follows.
 */
runtime: ContainerRuntime, 
/**
 * The container's id (a hex id, or a name for systemd-nspawn and LXC).
 */
id: string, 
/**
 * The Kubernetes pod's uid, for a container of a pod.
 */
pod: string | null, 
/**
 * The container's name: the runtime's own for Docker and Podman, when their API
 * socket on the machine answered (`docker ps`'s NAMES, without the `/`); the id
 * itself for systemd-nspawn and LXC, whose control groups carry the name. Absent
 * when not known, and from agents that predate it.
 */
name?: string, };

export type ContainerRuntime = "docker" | "podman" | "containerd" | "cri_o" | "systemd_nspawn" | "lxc" | "kubernetes";

export type UnavailablePart = { 
/**
 * Which part: `threads`, `files`, `memory_maps`, `limits`, `cgroups`, `environment`,
 * `executable`, `cwd`.
 */
part: string, 
/**
 * Why, in words (`permission denied: ...`).
 */
reason: string, };

export type KeyScope = "upload" | "metrics";

export type ApiKeySummary = { 
/**
 * Key id.
 */
id: number, 
/**
 * Label given at creation.
 */
name: string, 
/**
 * First characters of the key, to tell keys apart.
 */
prefix: string, 
/**
 * What the key may do.
 */
scope: KeyScope, 
/**
 * The only host name this key may upload for, if bound.
 */
hostname: string | null, 
/**
 * When it was made.
 */
created_at: string, 
/**
 * When it was last used.
 */
last_used_at: string | null, 
/**
 * When it was revoked; a revoked key is refused.
 */
revoked_at: string | null, };

export type ErrorBody = { 
/**
 * Machine-readable kind (`"bad_request"`, `"not_found"`, `"pid_reused"`, ...).
 */
error: string, 
/**
 * What went wrong and, where it helps, what to do.
 */
message: string, 
/**
 * The offending field, for validation errors.
 */
field: string | null, };

export type ApiRequest = { 
/**
 * `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
 */
method: string, 
/**
 * Path and query string, e.g. `/api/servers/local/snapshots?limit=50`.
 */
path: string, 
/**
 * The JSON body, if any.
 */
body: string | null, };

export type ApiReply = { 
/**
 * The HTTP status.
 */
status: number, 
/**
 * `Content-Type` of the body.
 */
content_type: string, 
/**
 * `Content-Disposition`, for downloads (exports).
 */
content_disposition: string | null, 
/**
 * The body as text (JSON or CSV).
 */
body: string, };

export type DesktopMode = "local" | "remote";

export type DesktopSettings = { 
/**
 * Closing the main window hides it to the tray instead of quitting (when there is
 * a tray).
 */
close_to_tray: boolean, 
/**
 * The built-in collector.
 */
collector: CollectorSettings, 
/**
 * The remote collector last signed in to, e.g. `https://procyon.example.com`.
 */
remote_url: string | null, };

export type CollectorSettings = { 
/**
 * Start it with the app. Off by default.
 */
enabled: boolean, 
/**
 * The address to listen on: `127.0.0.1` (this machine only) unless agents on other
 * machines must reach it, e.g. `0.0.0.0`.
 */
bind: string, 
/**
 * The TCP port.
 */
port: number, };

export type CollectorStatus = { 
/**
 * It is listening.
 */
running: boolean, 
/**
 * The address it listens on (`host:port`), while running.
 */
address: string | null, 
/**
 * Why it is not running although enabled (e.g. the port is taken).
 */
error: string | null, };

export type RemoteSession = { 
/**
 * Its base URL.
 */
url: string, 
/**
 * Who is signed in.
 */
username: string, 
/**
 * Their role there.
 */
role: Role, 
/**
 * When the sign-in ends (RFC 3339).
 */
expires_at: string, };

export type DesktopState = { 
/**
 * The app's version.
 */
version: string, 
/**
 * Where the data comes from now.
 */
mode: DesktopMode, 
/**
 * This machine's host name (the `local` host).
 */
hostname: string, 
/**
 * The person using the app (the OS user), who acts with the app's own rights.
 */
username: string, 
/**
 * The signed-in remote collector, in remote mode.
 */
remote: RemoteSession | null, 
/**
 * The built-in collector.
 */
collector: CollectorStatus, 
/**
 * The settings.
 */
settings: DesktopSettings, 
/**
 * Updates are paused (from the tray or the window).
 */
paused: boolean, 
/**
 * The app has a tray icon (false on desktops without one).
 */
tray: boolean, };

export type CommandError = { 
/**
 * `invalid` (bad argument), `unavailable` (e.g. the remote collector cannot be
 * reached), `unauthorized` (signed out or expired), `keyring` (the OS keyring
 * refused), `io` (a file or socket), `internal`.
 */
code: string, 
/**
 * What happened and what to do.
 */
detail: string, };

export type LiveEvent = { "kind": "open" } | { "kind": "message", 
/**
 * The JSON text.
 */
data: string, } | { "kind": "closed", 
/**
 * The close code.
 */
code: number, 
/**
 * Why, for the user.
 */
reason: string, };

export type SnapshotDelta = { 
/**
 * The host's name in the base (and the new snapshot, unless `host` says otherwise).
 */
hostname: string, 
/**
 * The host's id in the base.
 */
host_id: string, 
/**
 * The seq of the base snapshot.
 */
base_seq: number, 
/**
 * The new snapshot's seq.
 */
seq: number, 
/**
 * The new snapshot's schema version.
 */
schema_version: number, 
/**
 * When the new snapshot was taken.
 */
taken_at: string, 
/**
 * The new snapshot's interval, in ms.
 */
interval_ms: number, 
/**
 * The host, when it differs from the base's.
 */
host?: HostInfo, 
/**
 * Processor use, when it differs.
 */
cpu?: CpuSample, 
/**
 * Memory, when it differs.
 */
memory?: MemorySample, 
/**
 * Edits to the process list.
 */
processes: ProcessesDelta, 
/**
 * Edits to the socket list.
 */
connections: ListDelta<ConnectionSample>, 
/**
 * Network counters, when they differ.
 */
network?: NetworkSample, 
/**
 * Edits to the port usage lists.
 */
ports: PortsDelta, 
/**
 * The unmeasured parts, when they differ.
 */
errors?: Array<DomainError>, 
/**
 * The GPUs, when they differ (an empty list: the new snapshot has none).
 */
gpus?: Array<GpuSample>, 
/**
 * Filesystems, when they differ (`null`: no longer known).
 */
filesystems?: Array<FilesystemSample> | null, 
/**
 * Disk I/O, when it differs.
 */
disks?: Array<DiskSample> | null, 
/**
 * Temperatures, when they differ.
 */
temperatures?: Array<TemperatureSample> | null, 
/**
 * Fans, when they differ.
 */
fans?: Array<FanSample> | null, 
/**
 * Batteries, when they differ.
 */
batteries?: Array<BatterySample> | null, };

export type LiveMessage = { "type": "full", 
/**
 * Stored snapshot id.
 */
snapshot_id: number, 
/**
 * The snapshot.
 */
snapshot: Snapshot, } | { "type": "delta", 
/**
 * Stored snapshot id of the new snapshot.
 */
snapshot_id: number, 
/**
 * The delta.
 */
delta: SnapshotDelta, };

export type ProcessKey = { 
/**
 * Process id.
 */
pid: number, 
/**
 * Start time (`null` when the snapshot does not know it).
 */
start_time: string | null, };

export type ProcessesDelta = { 
/**
 * Base processes that are gone.
 */
removed: Array<ProcessKey>, 
/**
 * Processes in both whose fields changed.
 */
changed: Array<ProcessChange>, 
/**
 * New processes, by their index in the new list.
 */
added: Array<Placed<ProcessSample>>, };

export type ProcessChange = { 
/**
 * Process id (with `start_time`, the key).
 */
pid: number, 
/**
 * Start time (with `pid`, the key).
 */
start_time: string | null, 
/**
 * New parent pid.
 */
ppid?: number | null, 
/**
 * New name.
 */
name?: string, 
/**
 * New command line.
 */
cmd?: string, 
/**
 * New owner.
 */
user?: string | null, 
/**
 * New state.
 */
status?: ProcessStatus, 
/**
 * New CPU share.
 */
cpu_percent?: number | null, 
/**
 * New memory share.
 */
memory_percent?: number | null, 
/**
 * New resident set size.
 */
rss_bytes?: number | null, 
/**
 * New virtual size.
 */
virtual_bytes?: number | null, 
/**
 * New thread count.
 */
threads?: number | null, 
/**
 * New bytes read.
 */
disk_read_bytes?: number | null, 
/**
 * New bytes written.
 */
disk_write_bytes?: number | null, 
/**
 * New read rate.
 */
disk_read_bytes_per_sec?: number | null, 
/**
 * New write rate.
 */
disk_write_bytes_per_sec?: number | null, 
/**
 * New kernel-thread flag.
 */
kernel_thread?: boolean, 
/**
 * New container (`null`: it is in none now). A process keeps its container for
 * life, but its name may come later, when the runtime's socket has answered.
 */
container?: ContainerRef | null, 
/**
 * New GPU share.
 */
gpu_percent?: number | null, 
/**
 * New GPU memory.
 */
gpu_memory_bytes?: number | null, };

export type Placed<T> = { 
/**
 * Index in the new list.
 */
at: number, 
/**
 * The entry.
 */
item: T, };

export type ListDelta<T> = { 
/**
 * Values taken out of the base list (every copy).
 */
removed: Array<T>, 
/**
 * Values put in, by their index in the new list.
 */
added: Array<Placed<T>>, };

export type PortsDelta = { 
/**
 * Edits to `by_local_port`.
 */
by_local_port: ListDelta<PortCount>, 
/**
 * Edits to `listening`.
 */
listening: ListDelta<ListeningPort>, };

export type Metric = "host.offline" | "host.cpu_percent" | "host.memory_percent" | "host.swap_percent" | "host.load1" | "host.net_sent_bytes_per_sec" | "host.net_received_bytes_per_sec" | "host.net_errors_per_sec" | "process.absent" | "process.count" | "process.cpu_percent" | "process.rss_bytes" | "port.listening" | "host.new_listening_port" | "host.disk_percent" | "host.temperature";

export type Op = ">" | ">=" | "<" | "<=" | "==" | "!=";

export type Severity = "info" | "warning" | "critical";

export type Aggregate = "each" | "sum";

export type AlertRule = { 
/**
 * Unique name, 1 to 100 bytes; the `alertname` label.
 */
name: string, 
/**
 * What is watched.
 */
metric: Metric, 
/**
 * A host name, or `*` for every host (the default).
 */
host: string, 
/**
 * Which processes, in the dashboard's filter language (`name:nginx user:www-data`);
 * required for `process.*` metrics, not taken otherwise.
 */
process: string | null, 
/**
 * The port of `port.listening`.
 */
port: number | null, 
/**
 * Process measures: `each` (default) or `sum`.
 */
aggregate: Aggregate, 
/**
 * The mount point `host.disk_percent` watches (an absolute path such as `/home`,
 * or a drive such as `C:\\`), or `*` (the default) for every mount, each its own
 * alert. Not taken by other metrics.
 */
mount?: string, 
/**
 * The sensor `host.temperature` watches, by its name in the snapshot (e.g.
 * `coretemp Package id 0`); the hottest sensor when not given (or `*`). Not taken by
 * other metrics.
 */
sensor?: string, 
/**
 * Comparison; `>` by default (`==` for `port.listening`).
 */
op: Op | null, 
/**
 * The level that fires the rule; required unless the metric is a condition
 * (`host.offline`, `process.absent`) or `port.listening` (default 0).
 */
threshold: number | null, 
/**
 * How long the condition must hold before the rule fires (for `host.offline`, how
 * long without a snapshot: at least 5 s, default 60).
 */
for_secs: number, 
/**
 * The level that resolves a firing rule (hysteresis): with `>` the value must fall
 * below it, with `<` rise above it. Defaults to `threshold`.
 */
clear: number | null, 
/**
 * `info`, `warning` (default) or `critical`.
 */
severity: Severity, 
/**
 * Notify again this often while firing; 0 (default) notifies once.
 */
repeat_secs: number, 
/**
 * Names of the channels to notify.
 */
channels: Array<string>, 
/**
 * Loaded from the `--alerts` file: shown, never changed through the API. Ignored
 * in requests (so that an answer can be sent back changed).
 */
read_only: boolean, };

export type ChannelKind = "webhook" | "alertmanager" | "slack" | "ntfy" | "email" | "desktop";

export type SmtpTls = "none" | "starttls" | "tls";

export type EmailSettings = { 
/**
 * The SMTP server's host name or address.
 */
host: string, 
/**
 * Its port; by default 587 with STARTTLS, 465 with TLS, 25 without.
 */
port: number | null, 
/**
 * `none`, `starttls` (default) or `tls`.
 */
tls: SmtpTls, 
/**
 * The user to authenticate as (PLAIN or LOGIN); none: no authentication.
 */
username: string | null, 
/**
 * The password. Never in answers; on `PUT`, leaving it out keeps the stored one,
 * `""` removes it.
 */
password?: string | null, 
/**
 * Whether a password is stored (answers only; ignored in requests).
 */
password_set: boolean, 
/**
 * The sender, `alerts@example.org` or `Procyon <alerts@example.org>`.
 */
from: string, 
/**
 * The recipients, 1 to 20.
 */
to: Array<string>, };

export type QuietHours = { 
/**
 * When they begin each day, `HH:MM` or `HH:MM:SS`.
 */
start: string, 
/**
 * When they end, `HH:MM` or `HH:MM:SS`; before `start` to span midnight.
 */
end: string, 
/**
 * An IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
 */
time_zone: string, };

export type AlertChannel = { 
/**
 * Unique name, 1 to 100 bytes.
 */
name: string, 
/**
 * What it is.
 */
kind: ChannelKind, 
/**
 * Where to send (http or https); not taken by `email` and `desktop` channels. In
 * answers, only its scheme, host and port.
 */
url: string, 
/**
 * Sent as `Authorization: Bearer TOKEN` when set (ntfy access tokens, a receiver's
 * secret). Never in answers (`token_set` says whether there is one). On `PUT`,
 * leaving it out keeps the stored one; `""` removes it.
 */
token?: string | null, 
/**
 * Whether a token is stored (answers only; ignored in requests).
 */
token_set: boolean, 
/**
 * The SMTP server, sender and recipients of an `email` channel.
 */
email?: EmailSettings | null, 
/**
 * When notifications are held back, to go out as one summary when they end.
 */
quiet_hours?: QuietHours | null, 
/**
 * Loaded from the `--alerts` file: shown, never changed through the API (ignored
 * in requests).
 */
read_only: boolean, };

export type AlertState = "pending" | "firing" | "resolved";

export type Alert = { 
/**
 * Pending, firing or resolved.
 */
state: AlertState, 
/**
 * The rule's name.
 */
rule: string, 
/**
 * The host.
 */
hostname: string, 
/**
 * `""` for a host measure; the filter for processes taken together; `name (pid)`
 * for one process; `mount /home` for one filesystem (`host.disk_percent`);
 * `sensor NAME` for a named sensor (`host.temperature`).
 */
process: string, 
/**
 * The rule's severity.
 */
severity: Severity, 
/**
 * The value when it last changed (for `host.offline`, seconds without a
 * snapshot).
 */
value: number, 
/**
 * Pending: since the condition holds; firing and resolved: when it fired.
 */
since: string, 
/**
 * When it resolved.
 */
resolved_at: string | null, };

export type AlertEvent = { 
/**
 * Event id.
 */
id: number, 
/**
 * `firing` or `resolved`.
 */
state: AlertState, 
/**
 * The rule's name.
 */
rule: string, 
/**
 * The host.
 */
hostname: string, 
/**
 * As in [`Alert::process`].
 */
process: string, 
/**
 * The rule's severity.
 */
severity: Severity, 
/**
 * The value that caused it.
 */
value: number, 
/**
 * When the alert fired.
 */
since: string, 
/**
 * When this happened.
 */
at: string, };

export type DeliveryResult = "delivered" | "failed" | "silenced";

export type AlertDelivery = { 
/**
 * Attempt id.
 */
id: number, 
/**
 * The channel's name.
 */
channel: string, 
/**
 * The rule's name (`""` for a test).
 */
rule: string, 
/**
 * The host (`""` for a test).
 */
hostname: string, 
/**
 * As in [`Alert::process`].
 */
process: string, 
/**
 * `firing`, `resolved`, `test`, or `summary` (what a channel's quiet hours held
 * back, sent when they ended).
 */
status: string, 
/**
 * 1 for the first attempt, then 2, 3, ...
 */
attempt: number, 
/**
 * How it went.
 */
result: DeliveryResult, 
/**
 * Why it failed.
 */
error: string | null, 
/**
 * When.
 */
at: string, };

export type Silence = { 
/**
 * Silence id.
 */
id: number, 
/**
 * The rule it holds back; `null` for every rule.
 */
rule: string | null, 
/**
 * The host it holds back; `null` for every host.
 */
hostname: string | null, 
/**
 * When it ends.
 */
ends_at: string, 
/**
 * Why, for the others.
 */
comment: string, 
/**
 * Who made it.
 */
created_by: string, 
/**
 * When.
 */
created_at: string, };

export type NewSilence = { 
/**
 * The rule to hold back; left out for every rule.
 */
rule: string | null, 
/**
 * The host to hold back; left out for every host.
 */
hostname: string | null, 
/**
 * When it ends (in the future).
 */
ends_at: string, 
/**
 * Why (up to 500 bytes).
 */
comment: string, };

export type NetworkMap = { 
/**
 * Live (each host's newest snapshot held in memory), or as of the stored history
 * of `from`..`to`.
 */
live: boolean, 
/**
 * Start of the range read (`null` when live).
 */
from: string | null, 
/**
 * End of the range read, or the moment (`null` when live).
 */
to: string | null, 
/**
 * The hosts read, by name.
 */
hosts: Array<MapHost>, 
/**
 * Nodes with at least one edge, by host name then pid; outside addresses last.
 */
nodes: Array<MapNode>, 
/**
 * Edges, busiest first within cross-host, same-host and outside edges.
 */
edges: Array<MapEdge>, 
/**
 * Something was left out to keep the answer bounded (see `omitted` and `notes`).
 */
truncated: boolean, 
/**
 * What was left out.
 */
omitted: MapOmitted, 
/**
 * What was left out or guessed, in words.
 */
notes: Array<string>, };

export type MapHost = { 
/**
 * Host name.
 */
hostname: string, 
/**
 * Snapshots of it read (1 when live or at a moment; more over a range).
 */
snapshots: number, 
/**
 * When the newest snapshot read was taken.
 */
taken_at: string, 
/**
 * Its own non-loopback addresses, as seen on its processes' sockets (what remote
 * connections are matched on).
 */
addresses: Array<string>, };

export type MapNodeKind = "process" | "host" | "external";

export type MapNode = { 
/**
 * Unique in the answer: `process:HOST:PID`, `host:HOST` or `external:ADDRESS`.
 */
id: string, 
/**
 * What it stands for.
 */
kind: MapNodeKind, 
/**
 * The monitored host (`null` for outside addresses).
 */
hostname: string | null, 
/**
 * The process id (processes only).
 */
pid: number | null, 
/**
 * Process name, host name, or the address.
 */
name: string, 
/**
 * The process's owner, when known.
 */
user: string | null, 
/**
 * The process's start time, when known (names it with the pid).
 */
start_time: string | null, 
/**
 * The outside address (outside nodes only).
 */
address: string | null, 
/**
 * Ports this process listens on (TCP) or is bound to (UDP), as seen.
 */
listening_ports: Array<number>, 
/**
 * The container the process runs in, when it is in one: the dashboard can draw
 * one node per container. Absent otherwise.
 */
container?: ContainerRef, };

export type MapEdge = { 
/**
 * The connecting side's node id (the client).
 */
source: string, 
/**
 * The listening side's node id (the server).
 */
target: string, 
/**
 * Transport protocol.
 */
protocol: Protocol, 
/**
 * The source's port, when every connection of the edge used the same one (`null`
 * when it stands for several).
 */
local_port: number | null, 
/**
 * The port the target listens on.
 */
remote_port: number, 
/**
 * TCP state (`null` for UDP).
 */
state: TcpState | null, 
/**
 * Connections (sockets) it stands for; over a range, the distinct ones seen.
 */
count: number, 
/**
 * Source and target are on two monitored hosts.
 */
cross_host: boolean, };

export type MapOmitted = { 
/**
 * Nodes not returned.
 */
nodes: number, 
/**
 * Edges not returned.
 */
edges: number, 
/**
 * Connections of the edges not returned.
 */
connections: number, 
/**
 * Hosts not read (past the limit of hosts).
 */
hosts: number, 
/**
 * Snapshots of the range not read (a long range is read at evenly spaced
 * snapshots).
 */
snapshots: number, 
/**
 * Sockets not joined: their host had more than a map keeps per host.
 */
sockets: number, };

export type Sharing = "private" | "users" | "everyone";

export type HostMetric = "cpu_percent" | "memory_used_bytes" | "process_count" | "sent_bytes_per_sec" | "received_bytes_per_sec";

export type ProcessMetric = "cpu_percent" | "rss_bytes";

export type Widget = { "kind": "host_chart", 
/**
 * Column.
 */
x: number, 
/**
 * Row.
 */
y: number, 
/**
 * Width in columns.
 */
w: number, 
/**
 * Height in rows.
 */
h: number, 
/**
 * Heading; the figure's name when absent.
 */
title?: string, 
/**
 * Host name or pattern (`*` matches any run of characters).
 */
hosts: string, 
/**
 * The figure.
 */
metric: HostMetric, } | { "kind": "process_chart", 
/**
 * Column.
 */
x: number, 
/**
 * Row.
 */
y: number, 
/**
 * Width in columns.
 */
w: number, 
/**
 * Height in rows.
 */
h: number, 
/**
 * Heading.
 */
title?: string, 
/**
 * The host.
 */
host: string, 
/**
 * The process name.
 */
process: string, 
/**
 * The figure.
 */
metric: ProcessMetric, } | { "kind": "process_table", 
/**
 * Column.
 */
x: number, 
/**
 * Row.
 */
y: number, 
/**
 * Width in columns.
 */
w: number, 
/**
 * Height in rows.
 */
h: number, 
/**
 * Heading.
 */
title?: string, 
/**
 * The host.
 */
host: string, 
/**
 * The filter; empty shows every process.
 */
filter: string, 
/**
 * The most rows shown.
 */
limit: number, } | { "kind": "top_ports", 
/**
 * Column.
 */
x: number, 
/**
 * Row.
 */
y: number, 
/**
 * Width in columns.
 */
w: number, 
/**
 * Height in rows.
 */
h: number, 
/**
 * Heading.
 */
title?: string, 
/**
 * The host.
 */
host: string, 
/**
 * How many ports.
 */
limit: number, } | { "kind": "alerts", 
/**
 * Column.
 */
x: number, 
/**
 * Row.
 */
y: number, 
/**
 * Width in columns.
 */
w: number, 
/**
 * Height in rows.
 */
h: number, 
/**
 * Heading.
 */
title?: string, 
/**
 * Host name or pattern; every host when absent.
 */
hosts?: string, } | { "kind": "network_map", 
/**
 * Column.
 */
x: number, 
/**
 * Row.
 */
y: number, 
/**
 * Width in columns.
 */
w: number, 
/**
 * Height in rows.
 */
h: number, 
/**
 * Heading.
 */
title?: string, 
/**
 * Host names or patterns separated by commas (`web-*, db-1`); every host when
 * absent.
 */
hosts?: string, 
/**
 * One node per host instead of one per process: a large fleet stays legible.
 */
collapsed: boolean, };

export type DashboardInput = { 
/**
 * Its name, 1 to 100 characters.
 */
name: string, 
/**
 * Who else may see it (default: nobody).
 */
shared: Sharing, 
/**
 * The users it is shared with when `shared` is `users`.
 */
shared_with: Array<string>, 
/**
 * The widgets; none is a valid new dashboard.
 */
widgets: Array<Widget>, };

export type Dashboard = { 
/**
 * Its id.
 */
id: number, 
/**
 * Its name.
 */
name: string, 
/**
 * Who made it; only they may change it.
 */
owner: string, 
/**
 * Who else may see it.
 */
shared: Sharing, 
/**
 * The users it is shared with when `shared` is `users`.
 */
shared_with: Array<string>, 
/**
 * The widgets.
 */
widgets: Array<Widget>, 
/**
 * Last changed.
 */
updated_at: string, 
/**
 * Whether the one asking may only look (it is someone else's).
 */
read_only: boolean, };
