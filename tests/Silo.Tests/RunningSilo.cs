using System.Globalization;
using OrleansPush.Cluster.Tests;

namespace OrleansPush.Silo.Tests;

/// <summary>The built <c>OrleansPush.Silo.dll</c> run as a process (<see cref="NodeProcess"/>) on free loopback ports.
/// Disposing kills it (by its PID) if it is still running.</summary>
internal sealed class RunningSilo : IAsyncDisposable
{
    private readonly NodeProcess _process;

    private RunningSilo(NodeProcess process, int siloPort, int gatewayPort)
    {
        _process = process;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public int SiloPort { get; }

    public int GatewayPort { get; }

    /// <summary>The silo's output so far (its last lines).</summary>
    public string Output => _process.Tail();

    /// <summary>A one-silo cluster (it is its own primary) with Localhost clustering and in-memory storage, plus
    /// <paramref name="settings"/> as command-line configuration.</summary>
    public static RunningSilo Start(IReadOnlyDictionary<string, string?> settings)
    {
        var siloPort = FreePort();
        var gatewayPort = FreePort();
        var arguments = new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:SiloPort"] = siloPort.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Cluster:GatewayPort"] = gatewayPort.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Cluster:PrimarySiloPort"] = siloPort.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Cluster:ClusterId"] = "silo-tests-" + Guid.NewGuid().ToString("N")[..8],
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:Microsoft.Hosting.Lifetime"] = "Information",
        };
        foreach (var (key, value) in settings)
        {
            arguments[key] = value;
        }

        return new RunningSilo(NodeProcess.StartBuilt("silo", "Silo", "OrleansPush.Silo.dll", arguments), siloPort, gatewayPort);
    }

    public static int FreePort() => Ports.Free();

    /// <summary>Waits until the output contains <paramref name="text"/>; fails with the output so far if the process
    /// exits first or the time runs out.</summary>
    public Task WaitForOutputAsync(string text, TimeSpan timeout) => _process.WaitForOutputAsync(text, timeout);

    /// <summary>The exit code, once the process has ended and its output has been read to the end.</summary>
    public Task<int> WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync(timeout);

    /// <summary>The TCP ports the process listens on, from its socket descriptors and the kernel's tables (Linux).</summary>
    public SortedSet<int> ListeningPorts()
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var fd in Directory.GetFiles($"/proc/{_process.Pid}/fd"))
        {
            var target = new FileInfo(fd).LinkTarget;
            if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal))
            {
                inodes.Add(target["socket:[".Length..^1]);
            }
        }

        var ports = new SortedSet<int>();
        foreach (var table in new[] { "tcp", "tcp6" })
        {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
            foreach (var line in File.ReadLines($"/proc/{_process.Pid}/net/{table}").Skip(1))
            {
                var columns = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (columns[3] == "0A" && inodes.Contains(columns[9]))
                {
                    ports.Add(int.Parse(columns[1].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                }
            }
        }

        return ports;
    }

    public ValueTask DisposeAsync() => _process.DisposeAsync();
}
