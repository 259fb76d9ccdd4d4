using System.Net;

namespace OrleansPush.Cluster.Tests;

/// <summary>
/// OrleansPush as operators run it, on loopback: a redis-server of its own (membership table and durable store), two
/// <c>Silo</c> processes and two <c>Gateway</c> processes that find each other through Redis. Every node keeps its
/// ports across restarts, so clients and the membership table see "the same" node come back.
/// </summary>
public sealed class LocalCluster : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private readonly string _prefix = "fault" + Guid.NewGuid().ToString("N")[..8];
    private readonly (int SiloPort, int GatewayPort)[] _siloPorts = [(Ports.Free(), Ports.Free()), (Ports.Free(), Ports.Free())];
    private readonly int[] _httpPorts = [Ports.Free(), Ports.Free()];
    private readonly NodeProcess?[] _silos = new NodeProcess?[2];
    private readonly NodeProcess?[] _gateways = new NodeProcess?[2];
    private readonly HttpClient _probe = new() { Timeout = TimeSpan.FromSeconds(5) };

    private readonly IReadOnlyDictionary<string, string> _settings;

    private LocalCluster(IReadOnlyDictionary<string, string> settings)
    {
        _settings = settings;
    }

    public RedisServer Redis { get; } = new();

    public Uri GatewayHttp(int i) => new($"http://127.0.0.1:{_httpPorts[i]}/");

    public Uri GatewayWebSocket(int i) => new($"ws://127.0.0.1:{_httpPorts[i]}/ws");

    /// <param name="settings">Settings of every node, over the defaults below.</param>
    public static async Task<LocalCluster> StartAsync(IReadOnlyDictionary<string, string>? settings = null)
    {
        var cluster = new LocalCluster(settings ?? new Dictionary<string, string>());
        try
        {
            await cluster.Redis.StartAsync();
            await Task.WhenAll(cluster.StartSiloAsync(0), cluster.StartSiloAsync(1));
            await Task.WhenAll(cluster.StartGatewayAsync(0), cluster.StartGatewayAsync(1));
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>Starts silo <paramref name="i"/> and returns once it has joined the cluster.</summary>
    public async Task StartSiloAsync(int i)
    {
        var (siloPort, gatewayPort) = _siloPorts[i];
        var silo = NodeProcess.StartBuilt($"silo-{i}", "Silo", "OrleansPush.Silo.dll", Settings(new()
        {
            ["OrleansPush:Cluster:SiloPort"] = siloPort.ToString(),
            ["OrleansPush:Cluster:GatewayPort"] = gatewayPort.ToString(),
            ["OrleansPush:Cluster:SiloName"] = $"silo-{i}",
        }));
        _silos[i] = silo;
        await silo.WaitForOutputAsync("Application started", StartTimeout);
    }

    /// <summary>Starts gateway <paramref name="i"/> and returns once its <c>/readyz</c> answers 200.</summary>
    public async Task StartGatewayAsync(int i)
    {
        var gateway = NodeProcess.StartBuilt($"gateway-{i}", "Gateway", "OrleansPush.Gateway.dll", Settings(new()
        {
            ["urls"] = $"http://127.0.0.1:{_httpPorts[i]}",
            ["OrleansPush:Cluster:Mode"] = "Cluster",
            ["OrleansPush:Gateway:DrainTimeout"] = "00:00:06",
            ["OrleansPush:Gateway:DrainBatchSize"] = "8",
            ["OrleansPush:Mqtt:Port"] = "0",
        }));
        _gateways[i] = gateway;
        var deadline = DateTime.UtcNow + StartTimeout;
        while (true)
        {
            try
            {
                using var ready = await _probe.GetAsync(new Uri(GatewayHttp(i), "readyz"));
                if (ready.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
            }

            if (gateway.HasExited || DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"gateway-{i} did not turn ready:\n{gateway.Tail()}");
            }

            await Task.Delay(250);
        }
    }

    public void KillSilo(int i) => (_silos[i] ?? throw new InvalidOperationException($"silo-{i} is not running")).KillNow();

    public void KillGateway(int i) => (_gateways[i] ?? throw new InvalidOperationException($"gateway-{i} is not running")).KillNow();

    /// <summary>SIGTERM and wait: a gateway drains (bye, then close), a silo leaves the cluster.</summary>
    public async Task StopSiloAsync(int i) => await StopAsync(_silos, i);

    public async Task StopGatewayAsync(int i) => await StopAsync(_gateways, i);

    public string Logs()
    {
        var nodes = _silos.Concat(_gateways).OfType<NodeProcess>();
        return string.Join("\n", nodes.Select(n => $"--- {n.Name} (last lines) ---\n{n.Tail()}"));
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _gateways.Concat(_silos).OfType<NodeProcess>())
        {
            await node.DisposeAsync();
        }

        await Redis.DisposeAsync();
        _probe.Dispose();
    }

    private static async Task StopAsync(NodeProcess?[] nodes, int i)
    {
        var node = nodes[i] ?? throw new InvalidOperationException($"node {i} is not running");
        await node.StopAsync(TimeSpan.FromSeconds(40));
        await node.DisposeAsync();
        nodes[i] = null;
    }

    private Dictionary<string, string?> Settings(Dictionary<string, string> own)
    {
        var all = new Dictionary<string, string?>
        {
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:Orleans"] = "Error",
            ["Logging:LogLevel:Microsoft.Hosting.Lifetime"] = "Information",
            ["OrleansPush:Cluster:ClusterId"] = _prefix,
            ["OrleansPush:Cluster:ServiceId"] = _prefix,
            ["OrleansPush:Cluster:Clustering"] = "Redis",
            ["OrleansPush:Cluster:Redis"] = Redis.Address,
            ["OrleansPush:Cluster:AdvertisedIP"] = "127.0.0.1",
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = Redis.Address,
            ["OrleansPush:Storage:Prefix"] = _prefix,

            // Fast failure detection, as a latency-sensitive deployment would set it: a dead silo is declared dead
            // within a few seconds, and its grains move.
            ["OrleansPush:Cluster:Membership:ProbeTimeout"] = "00:00:01",
            ["OrleansPush:Cluster:Membership:NumMissedProbesLimit"] = "2",
            ["OrleansPush:Routing:Lease"] = "00:00:06",
        };
        foreach (var (key, value) in _settings.Concat(own))
        {
            all[key] = value;
        }

        return all;
    }
}
