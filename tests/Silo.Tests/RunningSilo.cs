using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace OrleansPush.Silo.Tests;

/// <summary>The built <c>OrleansPush.Silo.dll</c> run with <c>dotnet</c> on free loopback ports, its console output
/// collected. Disposing kills it (by its PID) if it is still running.</summary>
internal sealed class RunningSilo : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private RunningSilo(Process process, int siloPort, int gatewayPort)
    {
        _process = process;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public int SiloPort { get; }

    public int GatewayPort { get; }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>A one-silo cluster (it is its own primary) with Localhost clustering and in-memory storage, plus
    /// <paramref name="settings"/> as command-line configuration.</summary>
    public static RunningSilo Start(IReadOnlyDictionary<string, string?> settings)
    {
        var dll = SiloAssembly();
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

        // Started in its own output folder, like a deployed silo, so that it reads its appsettings.json.
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Path.GetDirectoryName(dll)!,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (var (key, value) in arguments.Where(a => a.Value is not null))
        {
            info.ArgumentList.Add($"--{key}={value}");
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("dotnet did not start");
        var silo = new RunningSilo(process, siloPort, gatewayPort);
        process.OutputDataReceived += (_, e) => silo.Append(e.Data);
        process.ErrorDataReceived += (_, e) => silo.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return silo;
    }

    public static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    /// <summary>Waits until the output contains <paramref name="text"/>; fails with the output so far if the process
    /// exits first or the time runs out.</summary>
    public async Task WaitForOutputAsync(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Output.Contains(text, StringComparison.Ordinal))
        {
            if (_process.HasExited)
            {
                Assert.Fail($"the silo exited ({_process.ExitCode}) before writing '{text}':\n{Output}");
            }

            Assert.True(DateTime.UtcNow < deadline, $"the silo did not write '{text}' within {timeout}:\n{Output}");
            await Task.Delay(100);
        }
    }

    /// <summary>The exit code, once the process has ended and its output has been read to the end.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    /// <summary>The TCP ports the process listens on, from its socket descriptors and the kernel's tables (Linux).</summary>
    public SortedSet<int> ListeningPorts()
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var fd in Directory.GetFiles($"/proc/{_process.Id}/fd"))
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
            foreach (var line in File.ReadLines($"/proc/{_process.Id}/net/{table}").Skip(1))
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

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await _process.WaitForExitAsync(cts.Token);
        _process.Dispose();
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    /// <summary>tests/Silo.Tests/bin/&lt;Configuration&gt;/net10.0/ → Silo/bin/&lt;Configuration&gt;/net10.0/OrleansPush.Silo.dll,
    /// built by this project's (non-referencing) project reference.</summary>
    private static string SiloAssembly()
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var repository = output;
        while (repository is not null && !File.Exists(Path.Combine(repository.FullName, "OrleansPush.sln")))
        {
            repository = repository.Parent;
        }

        Assert.NotNull(repository);
        var dll = Path.Combine(repository.FullName, "Silo", "bin", output.Parent!.Name, output.Name, "OrleansPush.Silo.dll");
        Assert.True(File.Exists(dll), $"{dll} is missing: build tests/Silo.Tests (it builds the silo) first");
        return dll;
    }
}
