using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace OrleansPush.Bench;

/// <summary>A server process this benchmark started; it is stopped by its own PID and nothing else.</summary>
internal sealed class ServerProcess : IDisposable
{
    private static readonly List<ServerProcess> _all = [];
    private static readonly long _clockTicks = 100; // USER_HZ on Linux

    private ServerProcess(string name, Process process)
    {
        Name = name;
        Process = process;
    }

    public string Name { get; }

    public Process Process { get; }

    public int Pid => Process.Id;

    public static string LogDir { get; set; } = Path.GetTempPath();

    public static string? PidFile { get; set; }

    /// <summary>Starts <paramref name="file"/> with <paramref name="args"/>, its output to a log file; <c>exec</c> keeps the
    /// PID the one of the server itself.</summary>
    public static ServerProcess Start(string name, string file, IEnumerable<string> args)
    {
        Directory.CreateDirectory(LogDir);
        var log = Path.Combine(LogDir, name + ".log");
        var command = "exec " + Quote(file) + " " + string.Join(' ', args.Select(Quote)) + " > " + Quote(log) + " 2>&1";
        var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(command);
        info.Environment["DOTNET_gcServer"] = "1";
        info.Environment["DOTNET_TieredPGO"] = "1";
        info.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        info.Environment["Logging__LogLevel__Default"] = "Warning";
        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start " + name);
        var server = new ServerProcess(name, process);
        lock (_all)
        {
            _all.Add(server);
            WritePidFile();
        }

        return server;
    }

    private static string Quote(string s) => "'" + s.Replace("'", "'\\''") + "'";

    /// <summary>Total user+system CPU of the process so far (/proc/PID/stat fields 14 and 15).</summary>
    public TimeSpan CpuTime()
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{Pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            var ticks = long.Parse(fields[11]) + long.Parse(fields[12]);
            return TimeSpan.FromSeconds(ticks / (double)_clockTicks);
        }
        catch (IOException)
        {
            return TimeSpan.Zero;
        }
    }

    /// <summary>Resident set size in bytes (/proc/PID/status VmRSS).</summary>
    public long RssBytes()
    {
        foreach (var line in File.ReadLines($"/proc/{Pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
            }
        }

        return 0;
    }

    /// <summary>Context switches of all the process's threads so far (a cheap hint of thread wake-ups per message).</summary>
    public long ContextSwitches()
    {
        long total = 0;
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{Pid}/task"))
            {
                try
                {
                    foreach (var line in File.ReadLines(Path.Combine(task, "status")))
                    {
                        if (line.Contains("ctxt_switches:", StringComparison.Ordinal))
                        {
                            total += long.Parse(line.Split(':')[1].Trim());
                        }
                    }
                }
                catch (IOException)
                {
                    // the thread ended meanwhile
                }
            }
        }
        catch (IOException)
        {
            // the process ended
        }

        return total;
    }

    /// <summary>Busy time of the whole machine (every process, ours or not) from /proc/stat.</summary>
    public static TimeSpan MachineBusy()
    {
        var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
        var busy = f.Sum() - f[3] - f[4]; // minus idle and iowait
        return TimeSpan.FromSeconds(busy / (double)_clockTicks);
    }

    public bool HasExited => Process.HasExited;

    public void Dispose()
    {
        try
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
            // already gone
        }

        lock (_all)
        {
            _all.Remove(this);
            WritePidFile();
        }

        Process.Dispose();
    }

    /// <summary>Ctrl-C and process exit: stop every server still running, each by its PID.</summary>
    public static void StopAll()
    {
        ServerProcess[] all;
        lock (_all)
        {
            all = [.. _all];
        }

        foreach (var s in all)
        {
            s.Dispose();
        }
    }

    private static void WritePidFile()
    {
        if (PidFile is not null)
        {
            File.WriteAllLines(PidFile, _all.Select(s => s.Pid.ToString()));
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

internal enum ClientKind
{
    RawWebSocket,
    SignalR,

    /// <summary>MQTT 5 over the gateway's <c>/mqtt</c> WebSocket (OrleansPush only: <see cref="LoadSpec.Mqtt"/>).</summary>
    Mqtt,
}

/// <summary>One system under test: its processes (all of whose CPU is counted), where clients connect and where
/// publishes go.</summary>
internal sealed class SystemUnderTest : IAsyncDisposable
{
    private SystemUnderTest(string name, ClientKind kind)
    {
        Name = name;
        Kind = kind;
    }

    public string Name { get; }

    public ClientKind Kind { get; }

    public List<ServerProcess> Processes { get; } = [];

    /// <summary>Base URLs (http://127.0.0.1:port) of the processes clients connect to.</summary>
    public List<string> Endpoints { get; } = [];

    /// <summary>The Orleans gateway port for the in-cluster .NET publisher, when the system has one.</summary>
    public int? OrleansGatewayPort { get; private set; }

    public bool SupportsBatch { get; private set; }

    /// <summary>Publishes of one topic always go to the same endpoint (the SignalR comparator counts seq per instance).</summary>
    public string PublishEndpoint(string topic) => Endpoints[(int)((uint)StableHash(topic) % (uint)Endpoints.Count)];

    private static int StableHash(string s)
    {
        var h = 17;
        foreach (var c in s)
        {
            h = (h * 31) + c;
        }

        return h;
    }

    public TimeSpan CpuTime() => Processes.Aggregate(TimeSpan.Zero, (sum, p) => sum + p.CpuTime());

    public long ContextSwitches() => Processes.Sum(p => p.ContextSwitches());

    public static string Root { get; set; } = Directory.GetCurrentDirectory();

    /// <summary>More settings for the embedded node (a scenario's own lifetimes).</summary>
    public static string[] ExtraArgs { get; set; } = [];

    private static string Dll(string project, string assembly) => Path.Combine(Root, project, "bin", "Release", "net10.0", assembly + ".dll");

    // Quiet logs, and no MQTT TCP listener: several gateways share this machine.
    private static readonly string[] _quiet = ["--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Orleans=Warning", "--Logging:LogLevel:Microsoft=Warning", "--OrleansPush:Mqtt:Port=0",
        // the per-connection, per-IP and handshake limits would throttle a load generator on one address
        "--OrleansPush:Limits:MessagesPerSecond=0", "--OrleansPush:Limits:HandshakesPerSecond=0", "--OrleansPush:Limits:ConnectionsPerIp=0",
        // the state scenarios' namespace: subscribers that ask get Fossil deltas
        "--OrleansPush:Topics:Namespaces:state:Delta=true"];

    /// <summary>Starts the system and waits until it answers; one retry on new ports, since a port found free can be
    /// taken by another program before our server binds it.</summary>
    public static async Task<SystemUnderTest> StartAsync(string name)
    {
        try
        {
            return await StartOnceAsync(name);
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException)
        {
            Console.WriteLine($"  {name} did not start ({e.Message}); retrying on new ports");
            return await StartOnceAsync(name);
        }
    }

    private static async Task<SystemUnderTest> StartOnceAsync(string name)
    {
        var sut = name switch
        {
            "limit" => StartLimit(),
            "signalr-redis" => StartSignalR(redis: true),
            "signalr" => StartSignalR(redis: false),
            "orleanspush" => StartEmbedded(redisStore: false),
            "orleanspush-redis" => StartEmbedded(redisStore: true),
            "orleanspush-cluster" => await StartClusterAsync(),
            _ => throw new ArgumentException("unknown system " + name),
        };
        try
        {
            await sut.WaitReadyAsync(TimeSpan.FromSeconds(60));
        }
        catch
        {
            await sut.DisposeAsync();
            throw;
        }

        return sut;
    }

    private static SystemUnderTest StartLimit()
    {
        var sut = new SystemUnderTest("limit", ClientKind.RawWebSocket);
        var port = ServerProcess.FreePort();
        sut.Processes.Add(ServerProcess.Start("limit", "dotnet", [Dll("Bench", "OrleansPush.Bench"), "serve-limit", "--port", port.ToString()]));
        sut.Endpoints.Add($"http://127.0.0.1:{port}");
        return sut;
    }

    private static SystemUnderTest StartSignalR(bool redis)
    {
        var sut = new SystemUnderTest(redis ? "signalr-redis" : "signalr", ClientKind.SignalR);
        string[] redisArgs = [];
        if (redis)
        {
            var redisPort = ServerProcess.FreePort();
            sut.Processes.Add(ServerProcess.Start("redis", "redis-server",
                ["--port", redisPort.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]));
            redisArgs = ["--redis", $"127.0.0.1:{redisPort}"];
            WaitTcp(redisPort, TimeSpan.FromSeconds(10));
        }

        for (var i = 0; i < (redis ? 2 : 1); i++)
        {
            var port = ServerProcess.FreePort();
            sut.Processes.Add(ServerProcess.Start($"{sut.Name}-{i}", "dotnet", [Dll("Bench", "OrleansPush.Bench"), "serve-signalr", "--port", port.ToString(), .. redisArgs]));
            sut.Endpoints.Add($"http://127.0.0.1:{port}");
        }

        return sut;
    }

    /// <summary>The embedded single node; with <paramref name="redisStore"/>, its history and state on a redis-server
    /// of its own (counted in the system's CPU).</summary>
    private static SystemUnderTest StartEmbedded(bool redisStore)
    {
        var sut = new SystemUnderTest(redisStore ? "orleanspush-redis" : "orleanspush", ClientKind.RawWebSocket) { SupportsBatch = true };
        int port = ServerProcess.FreePort(), silo = ServerProcess.FreePort(), gateway = ServerProcess.FreePort();
        string[] storeArgs = [];
        if (redisStore)
        {
            var redisPort = ServerProcess.FreePort();
            sut.Processes.Add(ServerProcess.Start("redis", "redis-server",
                ["--port", redisPort.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]));
            WaitTcp(redisPort, TimeSpan.FromSeconds(10));
            storeArgs = ["--OrleansPush:Storage:Provider=Redis", $"--OrleansPush:Storage:Redis=127.0.0.1:{redisPort}"];
        }

        sut.Processes.Add(ServerProcess.Start(sut.Name, "dotnet",
        [
            Dll("Gateway", "OrleansPush.Gateway"), "--urls", $"http://127.0.0.1:{port}",
            $"--OrleansPush:Cluster:SiloPort={silo}", $"--OrleansPush:Cluster:GatewayPort={gateway}", .. storeArgs, .. _quiet, .. ExtraArgs,
        ]));
        sut.Endpoints.Add($"http://127.0.0.1:{port}");
        sut.OrleansGatewayPort = gateway;
        return sut;
    }

    private static async Task<SystemUnderTest> StartClusterAsync()
    {
        var sut = new SystemUnderTest("orleanspush-cluster", ClientKind.RawWebSocket) { SupportsBatch = true };
        int silo = ServerProcess.FreePort(), gateway = ServerProcess.FreePort();
        sut.Processes.Add(ServerProcess.Start("cluster-silo", "dotnet",
        [
            Dll("Silo", "OrleansPush.Silo"), $"--OrleansPush:Cluster:SiloPort={silo}", $"--OrleansPush:Cluster:GatewayPort={gateway}",
            $"--OrleansPush:Cluster:PrimarySiloPort={silo}", .. _quiet,
        ]));
        sut.OrleansGatewayPort = gateway;
        await Task.Run(() => WaitTcp(gateway, TimeSpan.FromSeconds(60)));
        for (var i = 0; i < 2; i++)
        {
            var port = ServerProcess.FreePort();
            sut.Processes.Add(ServerProcess.Start($"cluster-gateway-{i}", "dotnet",
            [
                Dll("Gateway", "OrleansPush.Gateway"), "--urls", $"http://127.0.0.1:{port}", "--OrleansPush:Cluster:Mode=Localhost",
                $"--OrleansPush:Cluster:GatewayPorts:0={gateway}", .. _quiet,
            ]));
            sut.Endpoints.Add($"http://127.0.0.1:{port}");
        }

        return sut;
    }

    private static void WaitTcp(int port, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                using var c = new TcpClient();
                c.Connect(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(100);
            }
        }
    }

    private async Task WaitReadyAsync(TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        foreach (var endpoint in Endpoints)
        {
            while (true)
            {
                if (Processes.FirstOrDefault(p => p.HasExited) is { } dead)
                {
                    throw new InvalidOperationException($"{dead.Name} exited early; see its log in {ServerProcess.LogDir}");
                }

                try
                {
                    using var r = await http.GetAsync(endpoint + "/healthz");
                    if (r.IsSuccessStatusCode)
                    {
                        break;
                    }
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                    // not up yet
                }

                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"{Name}: {endpoint}/healthz did not answer within {timeout}");
                }

                await Task.Delay(200);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        // gateways before the silo, redis last: each stops by its own PID
        foreach (var p in Enumerable.Reverse(Processes))
        {
            await Task.Run(p.Dispose);
        }

        Processes.Clear();
    }
}
