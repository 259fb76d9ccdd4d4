using System.Diagnostics;

namespace OrleansPush.Gateway.Tests;

/// <summary>A real <c>Silo</c> process on loopback ports, for fault tests that kill it with SIGKILL.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly Process _process;

    private SiloProcess(Process process, int siloPort, int gatewayPort)
    {
        _process = process;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public int SiloPort { get; }

    public int GatewayPort { get; }

    public int Pid => _process.Id;

    /// <summary>Starts a silo; the first of a cluster passes its own silo port as <paramref name="primarySiloPort"/>.</summary>
    public static SiloProcess Start(int? primarySiloPort, IDictionary<string, string?> settings)
    {
        var siloPort = Ports.Free();
        var gatewayPort = Ports.Free();
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(SiloDll());
        var all = TestGateway.Merge(TestSettings.Common(), TestGateway.Merge(new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:SiloPort"] = siloPort.ToString(),
            ["OrleansPush:Cluster:GatewayPort"] = gatewayPort.ToString(),
            ["OrleansPush:Cluster:PrimarySiloPort"] = (primarySiloPort ?? siloPort).ToString(),
        }, settings));
        foreach (var (key, value) in all)
        {
            info.ArgumentList.Add($"--{key}={value}");
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start the silo");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new SiloProcess(process, siloPort, gatewayPort);
    }

    /// <summary>SIGKILL: no goodbye, no graceful shutdown.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await _process.WaitForExitAsync(cts.Token);
        _process.Dispose();
    }

    private static string SiloDll()
    {
        // tests/Gateway.Tests/bin/<Configuration>/net10.0/ -> Silo/bin/<Configuration>/net10.0/OrleansPush.Silo.dll
        var bin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var configuration = bin.Parent!.Name;
        var root = bin;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "OrleansPush.sln")))
        {
            root = root.Parent;
        }

        var dll = Path.Combine(root?.FullName ?? throw new InvalidOperationException("repository root not found"), "Silo", "bin", configuration, bin.Name, "OrleansPush.Silo.dll");
        return File.Exists(dll) ? dll : throw new FileNotFoundException("Build the Silo project first", dll);
    }
}
