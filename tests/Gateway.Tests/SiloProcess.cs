using NodeProcess = OrleansPush.Cluster.Tests.NodeProcess;

namespace OrleansPush.Gateway.Tests;

/// <summary>A real <c>Silo</c> process on loopback ports, for fault tests that kill it with SIGKILL.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly NodeProcess _process;

    private SiloProcess(NodeProcess process, int siloPort, int gatewayPort)
    {
        _process = process;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public int SiloPort { get; }

    public int GatewayPort { get; }

    public int Pid => _process.Pid;

    /// <summary>Starts a silo; the first of a cluster passes its own silo port as <paramref name="primarySiloPort"/>.</summary>
    public static SiloProcess Start(int? primarySiloPort, IDictionary<string, string?> settings) =>
        Start(primarySiloPort, settings, Ports.Free(), Ports.Free());

    /// <summary>Starts a silo on these ports (a restart in place: clients that knew the old one find the new one there).</summary>
    public static SiloProcess Start(int? primarySiloPort, IDictionary<string, string?> settings, int siloPort, int gatewayPort)
    {
        var all = TestGateway.Merge(TestSettings.Common(), TestGateway.Merge(new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:SiloPort"] = siloPort.ToString(),
            ["OrleansPush:Cluster:GatewayPort"] = gatewayPort.ToString(),
            ["OrleansPush:Cluster:PrimarySiloPort"] = (primarySiloPort ?? siloPort).ToString(),
        }, settings));
        return new SiloProcess(NodeProcess.StartBuilt("silo", "Silo", "OrleansPush.Silo.dll", all), siloPort, gatewayPort);
    }

    /// <summary>The last lines the process wrote.</summary>
    public string Tail() => _process.Tail();

    /// <summary>SIGTERM, and waits for the silo to leave the cluster and exit.</summary>
    public Task StopAsync() => _process.StopAsync(TimeSpan.FromSeconds(60));

    /// <summary>SIGKILL: no goodbye, no graceful shutdown.</summary>
    public void Kill() => _process.KillNow();

    public ValueTask DisposeAsync() => _process.DisposeAsync();
}
