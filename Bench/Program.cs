using System.Diagnostics;
using System.Globalization;

namespace OrleansPush.Bench;

/// <summary>
/// <c>run</c>: the standard suite (starts every system itself, loads it, writes <c>results/&lt;date&gt;.md</c> and a chart).
/// <c>serve-limit</c> and <c>serve-signalr</c>: the comparators, each run as its own process so its CPU can be measured.
/// </summary>
internal static class Program
{
    private static readonly string[] _loadSystems = ["limit", "signalr-redis", "orleanspush", "orleanspush-cluster"];

    /// <summary>Run only when named with --systems (the durable-store comparison of the guarantees work).</summary>
    private static readonly string[] _optionalSystems = ["orleanspush-redis"];
    private static readonly string[] _idleSystems = ["limit", "signalr", "orleanspush", "orleanspush-cluster"];

    public static async Task<int> Main(string[] args)
    {
        var command = args.Length > 0 ? args[0] : "run";
        var options = Options(args.Skip(1).ToArray());
        switch (command)
        {
            case "serve-limit":
                return await LimitServer.RunAsync(int.Parse(options["port"]));
            case "serve-signalr":
                return await SignalRServer.RunAsync(int.Parse(options["port"]), options.GetValueOrDefault("redis"));
            case "run":
                return await RunSuiteAsync(options);
            default:
                Console.Error.WriteLine("usage: OrleansPush.Bench run [--root DIR] [--out DIR] [--measure S] [--warmup S] [--idle N] [--storm N] [--systems a,b] [--scenarios a,b]");
                Console.Error.WriteLine("       OrleansPush.Bench run --scenarios churn [--churn-minutes M] [--churn-rate N] [--churn-connections N] [--churn-memory-topics N] [--churn-gcdumps DIR] [--label L]");
                Console.Error.WriteLine("       OrleansPush.Bench serve-limit --port N | serve-signalr --port N [--redis HOST:PORT]");
                return 2;
        }
    }

    private static Dictionary<string, string> Options(string[] args)
    {
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i].StartsWith("--", StringComparison.Ordinal))
            {
                options[args[i][2..]] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
            }
        }

        return options;
    }

    private static async Task<int> RunSuiteAsync(Dictionary<string, string> options)
    {
        var root = Path.GetFullPath(options.GetValueOrDefault("root") ?? FindRoot());
        var outDir = Path.GetFullPath(options.GetValueOrDefault("out") ?? Path.Combine(root, "Bench", "results"));
        SystemUnderTest.Root = root;
        ServerProcess.LogDir = Path.Combine(outDir, "logs");
        ServerProcess.PidFile = Path.Combine(outDir, "logs", "servers.pid");
        Directory.CreateDirectory(ServerProcess.LogDir);
        var warmup = TimeSpan.FromSeconds(double.Parse(options.GetValueOrDefault("warmup") ?? "10"));
        var measure = TimeSpan.FromSeconds(double.Parse(options.GetValueOrDefault("measure") ?? "10"));
        var idle = int.Parse(options.GetValueOrDefault("idle") ?? "19000");
        var storm = int.Parse(options.GetValueOrDefault("storm") ?? "5000");
        // The fan-out rows again with a publisher that keeps only this many messages in flight (a light, steady load
        // rather than a saturating one).
        var lowInFlight = int.Parse(options.GetValueOrDefault("low-inflight") ?? "8");
        var systems = options.GetValueOrDefault("systems")?.Split(',') ?? [.. _loadSystems, .. _idleSystems.Except(_loadSystems)];
        var only = options.GetValueOrDefault("scenarios")?.Split(',');
        bool Wanted(string scenario) => only is null || only.Contains(scenario);

        // Ctrl-C, SIGTERM and any exit: stop every server this run started, each by its PID.
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            Console.WriteLine("interrupted: stopping servers");
            ServerProcess.StopAll();
            Environment.Exit(130);
        };
        AppDomain.CurrentDomain.ProcessExit += (_, _) => ServerProcess.StopAll();

        if (only is ["churn"])
        {
            // The churn scenario (issue 16): its own report, results/<date>-churn[-label].md.
            var minutes = double.Parse(options.GetValueOrDefault("churn-minutes") ?? "3", CultureInfo.InvariantCulture);
            var spec = new ChurnSpec(minutes, int.Parse(options.GetValueOrDefault("churn-rate") ?? "5000", CultureInfo.InvariantCulture), PublishesPerTopic: 3,
                ConnectionsPerSecond: int.Parse(options.GetValueOrDefault("churn-connections") ?? "20", CultureInfo.InvariantCulture), Hold: TimeSpan.FromSeconds(3),
                MemoryTopics: int.Parse(options.GetValueOrDefault("churn-memory-topics") ?? "20000", CultureInfo.InvariantCulture), ExpiryWait: TimeSpan.FromMinutes(5),
                Label: options.GetValueOrDefault("label") ?? "", GcDumps: options.GetValueOrDefault("churn-gcdumps") is { } dumps ? Path.GetFullPath(dumps) : null);
            try
            {
                Console.WriteLine(await Churn.RunAsync(outDir, spec));
            }
            finally
            {
                ServerProcess.StopAll();
            }

            return 0;
        }

        var started = Stopwatch.StartNew();
        var report = new Report(DateTime.Now, warmup, measure);
        var scenarios = new Scenarios(warmup, measure);
        LoadSpec[] specs =
        [
            new("fanout-1000", 1000, 1, PublishMode.Http, null, InFlight: 32, Workers: 16),
            new("fanout-5000", 5000, 1, PublishMode.Http, null, InFlight: 32, Workers: 16),
            new($"fanout-1000-if{lowInFlight}", 1000, 1, PublishMode.Http, null, InFlight: lowInFlight, Workers: lowInFlight),
            new($"fanout-5000-if{lowInFlight}", 5000, 1, PublishMode.Http, null, InFlight: lowInFlight, Workers: lowInFlight),
            new("p2p-1000", 1000, 1000, PublishMode.Http, null, InFlight: 256, Workers: 32),
            new("latency-1000", 1000, 1, PublishMode.Http, 50, InFlight: 64, Workers: 1),
            // One subscriber at a light load: what the path itself adds, with no fan-out or loader queueing.
            new("latency-1", 1, 1, PublishMode.Http, 20, InFlight: 4, Workers: 1),
        ];
        LoadSpec[] optional =
        [
            // Publish throughput of one topic (one subscriber, so delivery is not the limit): group commit at work.
            new("topic-1", 1, 1, PublishMode.Http, null, InFlight: 256, Workers: 32),
        ];
        LoadSpec[] orleansOnly =
        [
            // State topics (run when named: --scenarios state,state-delta): 1,000 subscribers of a ~2 KB state that
            // changes a few fields per message, at a fixed rate; wire bytes and CPU per delivered message, without and
            // with Fossil deltas.
            new("state", 1000, 1, PublishMode.Http, 50, InFlight: 1, Workers: 1, State: true),
            new("state-delta", 1000, 1, PublishMode.Http, 50, InFlight: 1, Workers: 1, State: true, Delta: true),
            // MQTT fan-out (run when named: --scenarios mqtt-fanout-1000): 1,000 MQTT 5 subscribers (QoS 0, over /mqtt)
            // of one topic, published to over HTTP.
            new("mqtt-fanout-1000", 1000, 1, PublishMode.Http, null, InFlight: 32, Workers: 16, Mqtt: true),
            new("p2p-1000", 1000, 1000, PublishMode.Batch, null, InFlight: 500, Workers: 4, BatchSize: 50),
            new("p2p-1000", 1000, 1000, PublishMode.Orleans, null, InFlight: 256, Workers: 32),
        ];
        try
        {
            foreach (var system in _loadSystems.Concat(_optionalSystems).Where(systems.Contains))
            {
                var wanted = specs.Where(s => Wanted(s.Scenario)).Concat(optional.Where(s => only?.Contains(s.Scenario) == true)).ToList();
                if (system.StartsWith("orleanspush", StringComparison.Ordinal))
                {
                    wanted.AddRange(orleansOnly.Where(s => s.State || s.Mqtt ? only?.Contains(s.Scenario) == true : Wanted(s.Scenario)));
                }

                var storms = system.StartsWith("orleanspush", StringComparison.Ordinal) && Wanted("storm");
                if (wanted.Count == 0 && !storms)
                {
                    continue;
                }

                Console.WriteLine($"[{started.Elapsed:mm\\:ss}] starting {system}");
                try
                {
                    await using var sut = await SystemUnderTest.StartAsync(system);
                    foreach (var spec in wanted)
                    {
                        report.Load.Add(await scenarios.RunLoadAsync(sut, spec));
                    }

                    if (storms)
                    {
                        report.Storms.Add(await Scenarios.RunStormAsync(sut, storm));
                    }
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    report.Problems.Add($"{system}: {e.GetType().Name}: {e.Message}");
                    Console.WriteLine($"  {system} failed: {e}");
                }
            }

            if (Wanted("idle"))
            {
                foreach (var system in _idleSystems.Where(systems.Contains))
                {
                    Console.WriteLine($"[{started.Elapsed:mm\\:ss}] idle connections on {system}");
                    try
                    {
                        report.Idle.Add(await Scenarios.RunIdleAsync(system, idle));
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        report.Problems.Add($"idle {system}: {e.GetType().Name}: {e.Message}");
                        Console.WriteLine($"  idle {system} failed: {e}");
                    }
                }
            }
        }
        finally
        {
            ServerProcess.StopAll();
        }

        report.Elapsed = started.Elapsed;
        var markdown = report.Write(outDir);
        Console.WriteLine();
        Console.WriteLine(markdown);
        return 0;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Packages.props")))
            {
                return dir.FullName;
            }
        }

        return Directory.GetCurrentDirectory();
    }
}
