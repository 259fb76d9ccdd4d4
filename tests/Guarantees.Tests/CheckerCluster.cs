using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Tests;
using OrleansPush.Grains;
using OrleansPush.Grains.History;

namespace OrleansPush.Guarantees.Tests;

/// <summary>
/// One schedule's cluster, in this process over loopback: silos (the first is the primary of localhost clustering
/// and is never killed) whose history store is behind <see cref="FaultyStore"/>, and gateways that are Orleans clients
/// of them with the stream and grain-call seams registered. The store is either one memory store shared by every silo
/// (history survives a silo, as on Redis or PostgreSQL) or one per silo, gone with it (the <c>Memory</c> provider: a
/// topic whose silo died starts a new epoch).
/// </summary>
public sealed class CheckerCluster : IAsyncDisposable
{
    /// <summary>History sizes of the two namespaces the checker publishes to: a long one, and one so short that a
    /// reconnect often finds its gap gone.</summary>
    public const int LongHistory = 1000;
    public const int ShortHistory = 6;

    private readonly FaultPlan _plan;
    private readonly Dictionary<string, string?> _settings;
    private readonly List<SiloSlot> _silos = [];
    private readonly List<TestGateway?> _gateways = [];

    private readonly FaultyStore? _shared;
    private readonly List<FaultyStore> _stores = [];

    private CheckerCluster(FaultPlan plan, Dictionary<string, string?> settings, bool sharedStore)
    {
        _plan = plan;
        _settings = settings;
        _shared = sharedStore ? NewStore() : null;
    }

    /// <summary>Whether history can be lost: each silo has its own store, which dies with it.</summary>
    public bool StorePerSilo => _shared is null;

    /// <summary>The stores of the running silos.</summary>
    public IReadOnlyList<FaultyStore> LiveStores =>
        _shared is not null ? [_shared] : _silos.Where(s => s.Host is not null).Select(s => s.Store!).ToList();

    /// <summary>Waits for the appends still on their way in any store.</summary>
    public Task LateAppendsAsync() => Task.WhenAll(_stores.ToList().Select(s => s.LateAppendsAsync()));

    private FaultyStore NewStore()
    {
        var store = new FaultyStore(new MemoryHistoryStore(TimeProvider.System), _plan);
        lock (_stores)
        {
            _stores.Add(store);
        }

        return store;
    }

    /// <summary>The gateways still running (a lost one is null in <see cref="Gateway"/>).</summary>
    public IReadOnlyList<TestGateway> LiveGateways => _gateways.Where(g => g is not null).Select(g => g!).ToList();

    public TestGateway? Gateway(int i) => _gateways[i];

    public int GatewayCount => _gateways.Count;

    public int SiloCount => _silos.Count;

    public bool SiloRunning(int i) => _silos[i].Host is not null;

    public static HistoryBounds Bounds(string topic) => new(
        topic.StartsWith("cks:", StringComparison.Ordinal) ? ShortHistory : LongHistory, NamespaceOptions.DefaultHistoryTtl, TimeSpan.FromMinutes(2), NamespaceOptions.DefaultPositionTtl);

    public static async Task<CheckerCluster> StartAsync(FaultPlan plan, int silos, int gateways, bool sharedStore)
    {
        var id = $"ck{plan.Seed}-{Guid.NewGuid():N}"[..24];
        var settings = new Dictionary<string, string?>
        {
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:Orleans"] = "Error",
            ["Logging:LogLevel:Microsoft"] = "Error",
            ["Logging:LogLevel:Polly"] = "Error",
            ["Logging:LogLevel:Microsoft.Hosting.Lifetime"] = "Warning",
            ["Logging:Console:LogLevel:Default"] = "None",
            ["OrleansPush:Cluster:ServiceId"] = id,
            ["OrleansPush:Cluster:ClusterId"] = id,
            ["OrleansPush:Cluster:ResponseTimeout"] = "00:00:05",
            ["OrleansPush:Cluster:Membership:ProbeTimeout"] = "00:00:01",
            ["OrleansPush:Cluster:Membership:NumMissedProbesLimit"] = "2",
            ["OrleansPush:Cluster:Membership:MaxProbeTimeout"] = "00:00:02",
            ["OrleansPush:Cluster:Membership:ExtendProbeTimeoutDuringDegradation"] = "false",
            ["OrleansPush:Routing:Lease"] = "00:00:03",
            ["OrleansPush:Topics:Namespaces:ckl:HistorySize"] = LongHistory.ToString(),
            ["OrleansPush:Topics:Namespaces:cks:HistorySize"] = ShortHistory.ToString(),
            ["OrleansPush:Gateway:PublishAttemptTimeout"] = "00:00:02",
            ["OrleansPush:Gateway:PublishTimeout"] = "00:00:05",
            ["OrleansPush:Gateway:MaxMessageBytes"] = "4096",
            ["OrleansPush:Gateway:OutboundQueueBytes"] = "16384",
            ["OrleansPush:Gateway:DrainTimeout"] = "00:00:02",
            ["OrleansPush:Mqtt:Port"] = "0",
        };

        var cluster = new CheckerCluster(plan, settings, sharedStore);
        try
        {
            for (var i = 0; i < silos; i++)
            {
                cluster._silos.Add(new SiloSlot(Ports.Free(), Ports.Free()));
            }

            foreach (var i in Enumerable.Range(0, silos))
            {
                await cluster.StartSiloAsync(i);
            }

            for (var i = 0; i < gateways; i++)
            {
                cluster._gateways.Add(await cluster.StartGatewayAsync(i));
            }
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }

        return cluster;
    }

    /// <summary>Starts silo <paramref name="i"/> (again, after a kill) on its ports.</summary>
    public async Task StartSiloAsync(int i)
    {
        var slot = _silos[i];
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(TestGateway.Merge(_settings, new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:SiloPort"] = slot.SiloPort.ToString(),
            ["OrleansPush:Cluster:GatewayPort"] = slot.GatewayPort.ToString(),
            ["OrleansPush:Cluster:PrimarySiloPort"] = _silos[0].SiloPort.ToString(),
        })).Build();
        var store = slot.Store = _shared ?? NewStore();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddConfiguration(configuration);
        builder.Logging.AddConfiguration(configuration.GetSection("Logging"));
        builder.Logging.AddProvider(new JournalLoggerProvider(_plan.Journal, "silo" + i));
        builder.UseOrleans(silo =>
        {
            silo.AddOrleansPushSilo(configuration);
            silo.Services.AddSingleton<IHistoryStore>(store);
        });
        var host = builder.Build();
        await host.StartAsync();
        slot.Host = host;
        _plan.Journal.Add($"silo{i} started");
    }

    /// <summary>Kills silo <paramref name="i"/> as a crash does: no graceful hand-over, the others find out by probing.</summary>
    public async Task KillSiloAsync(int i)
    {
        var host = _silos[i].Host ?? throw new InvalidOperationException($"silo{i} is not running");
        _silos[i].Host = null;
        _plan.Journal.Add($"silo{i} killed");
        using var now = new CancellationTokenSource();
        now.Cancel();
        try
        {
            await host.StopAsync(now.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or AggregateException)
        {
        }

        host.Dispose();
    }

    private async Task<TestGateway> StartGatewayAsync(int i)
    {
        var settings = TestGateway.Merge(_settings, new Dictionary<string, string?> { ["OrleansPush:Cluster:Mode"] = "Localhost" });
        for (var s = 0; s < _silos.Count; s++)
        {
            settings[$"OrleansPush:Cluster:GatewayPorts:{s}"] = _silos[s].GatewayPort.ToString();
        }

        var name = "gw" + i;
        var gateway = await TestGateway.StartCustomAsync(settings, services =>
        {
            services.AddSingleton<IGatewayEventFilter>(new StreamFaults(_plan, name));
            services.AddSingleton<IOutgoingGrainCallFilter>(new GrainCallFaults(_plan, name));
            services.AddSingleton<ILoggerProvider>(new JournalLoggerProvider(_plan.Journal, name));
        });
        _plan.Journal.Add($"{name} started at {gateway.BaseAddress}");
        return gateway;
    }

    /// <summary>Gateway <paramref name="i"/> goes away; its clients reconnect to another.</summary>
    public async Task LoseGatewayAsync(int i)
    {
        var gateway = _gateways[i] ?? throw new InvalidOperationException($"gw{i} is not running");
        _gateways[i] = null;
        _plan.Journal.Add($"gw{i} lost");
        await gateway.DisposeAsync();
    }

    /// <summary>The cluster as the checker reads it at the end (through a gateway's client, with faults stopped).</summary>
    public IClusterClient Client => LiveGateways[0].Services.GetRequiredService<IClusterClient>();

    public async ValueTask DisposeAsync()
    {
        foreach (var gateway in _gateways.Where(g => g is not null))
        {
            try
            {
                await gateway!.DisposeAsync();
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
            {
            }
        }

        _gateways.Clear();
        for (var i = _silos.Count - 1; i >= 0; i--)
        {
            if (_silos[i].Host is { } host)
            {
                _silos[i].Host = null;
                try
                {
                    await host.StopAsync(TimeSpan.FromSeconds(5));
                }
                catch (OperationCanceledException)
                {
                }

                host.Dispose();
            }
        }
    }

    private sealed class SiloSlot(int siloPort, int gatewayPort)
    {
        public int SiloPort { get; } = siloPort;

        public int GatewayPort { get; } = gatewayPort;

        public IHost? Host { get; set; }

        public FaultyStore? Store { get; set; }
    }
}
