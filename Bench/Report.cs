using System.Globalization;
using System.Text;
using ScottPlot;

namespace OrleansPush.Bench;

/// <summary>Collects the rows of one run and writes them as markdown (with the targets of issues 3 and 12) and a chart.</summary>
internal sealed class Report(DateTime started, TimeSpan warmup, TimeSpan measure)
{
    private static readonly string[] _chartScenarios = ["fanout-1000", "fanout-5000", "fanout-1000-if8", "p2p-1000", "latency-1000"];
    private static readonly string[] _chartSystems = ["limit", "signalr-redis", "orleanspush", "orleanspush-cluster"];

    public List<LoadRow> Load { get; } = [];

    public List<IdleRow> Idle { get; } = [];

    public List<StormRow> Storms { get; } = [];

    public List<string> Problems { get; } = [];

    public TimeSpan Elapsed { get; set; }

    public string Write(string outDir)
    {
        Directory.CreateDirectory(outDir);
        var name = started.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        var chart = name + ".png";
        WriteChart(Path.Combine(outDir, chart));
        var markdown = Markdown(chart);
        File.WriteAllText(Path.Combine(outDir, name + ".md"), markdown);
        return markdown;
    }

    private string Markdown(string chart)
    {
        var md = new StringBuilder();
        md.AppendLine($"# OrleansPush benchmark, {started:yyyy-MM-dd HH:mm}");
        md.AppendLine();
        md.AppendLine($"Machine: {Environment.ProcessorCount} cores ({CpuModel()}), .NET {Environment.Version}; loader and servers share the cores. " +
            $"Each load row: {warmup.TotalSeconds:0} s warm-up, {measure.TotalSeconds:0} s measured. Payload ~100 bytes. Whole run: {Elapsed:mm\\:ss}. " +
            "Command: `Bench/run.sh`.");
        md.AppendLine();
        md.AppendLine("**CPU µs/msg** = user+system CPU of every process of the system under test (gateways, silo, redis-server) during the window, " +
            "divided by the messages delivered to subscribers in the window. *cores* = that CPU time per wall second; *loader cores* the benchmark " +
            "process's; *machine cores* everything busy on the machine (anything above servers + loader is another program competing); " +
            "*ctx sw/msg* = context switches of all server threads per delivered message.");
        md.AppendLine();
        md.AppendLine("## Targets");
        md.AppendLine();
        md.AppendLine("| target | measured | ratio | met |");
        md.AppendLine("|---|---|---|---|");
        foreach (var line in Targets())
        {
            md.AppendLine(line);
        }

        md.AppendLine();
        md.AppendLine("## Load");
        md.AppendLine();
        md.AppendLine("| scenario | system | publisher | subs | conn | published/s | delivered/s | p50 ms | p90 ms | p99 ms | max ms | lost | gaps | cores | loader cores | machine cores | ctx sw/msg | **CPU µs/msg** |");
        md.AppendLine("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in Load)
        {
            md.AppendLine(Inv($"| {r.Scenario} | {r.System} | {r.Publisher} | {r.Subscribers:N0} | {r.Connected:N0} | {r.PublishedPerSec:N0} | {r.DeliveredPerSec:N0} | {r.P50:0.00} | {r.P90:0.00} | {r.P99:0.00} | {r.Max:0.0} | {r.Lost} | {r.Gaps} | {r.ServerCores:0.00} | {r.LoaderCores:0.00} | {r.MachineCores:0.00} | {r.ContextSwitchesPerMessage:0.00} | **{r.CpuMicrosPerMessage:0.00}** |"));
        }

        var state = Load.Where(r => r.Scenario.StartsWith("state", StringComparison.Ordinal)).ToList();
        if (state.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("## State topics (a ~2 KB JSON state changing a few fields per message)");
            md.AppendLine();
            md.AppendLine("| scenario | system | subs | delivered/s | **wire bytes/msg** | **CPU µs/msg** | cores |");
            md.AppendLine("|---|---|---:|---:|---:|---:|---:|");
            foreach (var r in state)
            {
                md.AppendLine(Inv($"| {r.Scenario} | {r.System} | {r.Connected:N0} | {r.DeliveredPerSec:N0} | **{r.WireBytesPerMessage:0}** | **{r.CpuMicrosPerMessage:0.00}** | {r.ServerCores:0.00} |"));
            }
        }

        if (Idle.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("## Idle connections (server RSS from /proc/PID/status, freshly started system)");
            md.AppendLine();
            md.AppendLine($"CPU (cores) over {Scenarios.IdleWindow.TotalSeconds:0} s windows: with no client {Scenarios.IdleSettle.TotalSeconds:0} s after start, and while holding the connections.");
            md.AppendLine();
            md.AppendLine("| system | CPU with no clients (cores) | CPU holding the connections (cores) | requested | held | RSS before MiB | RSS after MiB | **KiB per connection** |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in Idle)
            {
                md.AppendLine(Inv($"| {r.System} | {r.EmptyCores:0.000} | {r.HeldCores:0.000} | {r.Requested:N0} | {r.Connected:N0} | {r.RssBefore / 1048576.0:0} | {r.RssAfter / 1048576.0:0} | **{r.BytesPerConnection / 1024:0.0}** |"));
            }
        }

        if (Storms.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("## Reconnect storm (all clients reconnect at once with `since`, 10 messages missed)");
            md.AppendLine();
            md.AppendLine("| system | clients | reconnected | recovered:true | got every missed message | seconds until all answered | server CPU s |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
            foreach (var r in Storms)
            {
                md.AppendLine(Inv($"| {r.System} | {r.Clients:N0} | {r.Reconnected:N0} | {r.Recovered:N0} | {r.Complete:N0} | {r.Seconds:0.00} | {r.ServerCpuSeconds:0.00} |"));
            }
        }

        md.AppendLine();
        md.AppendLine($"![server CPU per delivered message]({chart})");
        if (Problems.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("## Problems during the run");
            md.AppendLine();
            foreach (var p in Problems)
            {
                md.AppendLine("- " + p);
            }
        }

        return md.ToString();
    }

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private LoadRow? Find(string scenario, string system) =>
        Load.FirstOrDefault(r => r.Scenario == scenario && r.System == system && r.Publisher.StartsWith("HTTP", StringComparison.Ordinal) && !r.Publisher.Contains("batch"));

    private IEnumerable<string> Targets()
    {
        foreach (var us in new[] { "orleanspush", "orleanspush-cluster" })
        {
            var fanouts = Load.Select(r => r.Scenario).Where(s => s.StartsWith("fanout-", StringComparison.Ordinal)).Distinct();
            foreach (var scenario in fanouts)
            {
                var (o, l) = (Find(scenario, us), Find(scenario, "limit"));
                yield return Ratio($"{us} {scenario}: CPU/msg ≤ 1.25 × limit", o?.CpuMicrosPerMessage, l?.CpuMicrosPerMessage, 1.25, lowerIsBetter: true, "µs");
            }

            {
                var (o, l) = (Find("p2p-1000", us), Find("p2p-1000", "limit"));
                yield return Ratio($"{us} p2p-1000 over HTTP: CPU/msg ≤ 2 × limit", o?.CpuMicrosPerMessage, l?.CpuMicrosPerMessage, 2, lowerIsBetter: true, "µs");
                yield return Ratio($"{us} p2p-1000 over HTTP: CPU/msg ≤ 1.5 × limit (stretch)", o?.CpuMicrosPerMessage, l?.CpuMicrosPerMessage, 1.5, lowerIsBetter: true, "µs");
            }

            {
                var (o, l) = (Find("latency-1000", us), Find("latency-1000", "limit"));
                yield return Ratio($"{us} latency 50 msg/s × 1,000: p99 ≤ 1.25 × limit", o?.P99, l?.P99, 1.25, lowerIsBetter: true, "ms");
            }

            {
                var (o, l) = (Find("latency-1", us), Find("latency-1", "limit"));
                yield return o is null || l is null
                    ? $"| {us} latency 20 msg/s × 1: p50 ≤ limit + 1 ms | not measured | | n/a |"
                    : Inv($"| {us} latency 20 msg/s × 1: p50 ≤ limit + 1 ms | {o.P50:0.00} ms vs {l.P50:0.00} ms | +{o.P50 - l.P50:0.00} ms | {(o.P50 <= l.P50 + 1 ? "met" : "**not met**")} |");
                yield return Ratio($"{us} latency 20 msg/s × 1: p99 ≤ 2 × limit", o?.P99, l?.P99, 2, lowerIsBetter: true, "ms");
            }

            var (io, il) = (Idle.FirstOrDefault(r => r.System == us), Idle.FirstOrDefault(r => r.System == "limit"));
            yield return Ratio($"{us} idle: memory/connection ≤ 1.1 × limit", io?.BytesPerConnection / 1024, il?.BytesPerConnection / 1024, 1.1, lowerIsBetter: true, "KiB");
            yield return AtMost($"{us} idle, no clients: ≤ 0.02 cores", io?.EmptyCores, 0.02, "cores");
            yield return AtMost($"{us} idle, {io?.Connected ?? 0:N0} connections held: ≤ 0.05 cores", io?.HeldCores, 0.05, "cores");
        }

        const string embedded = "orleanspush";
        foreach (var scenario in new[] { "fanout-1000", "fanout-5000", "p2p-1000" })
        {
            var (o, s) = (Find(scenario, embedded), Find(scenario, "signalr-redis"));
            yield return Ratio($"{embedded} {scenario}: CPU/msg < signalr-redis", o?.CpuMicrosPerMessage, s?.CpuMicrosPerMessage, 1.0, lowerIsBetter: true, "µs", strict: true);
        }

        var (ie, isr) = (Idle.FirstOrDefault(r => r.System == embedded), Idle.FirstOrDefault(r => r.System == "signalr"));
        yield return Ratio("idle: memory/connection < plain SignalR", ie?.BytesPerConnection / 1024, isr?.BytesPerConnection / 1024, 1.0, lowerIsBetter: true, "KiB", strict: true);
    }

    private static string AtMost(string target, double? measured, double bound, string unit) =>
        measured is not { } m || double.IsNaN(m)
            ? $"| {target} | not measured | | n/a |"
            : Inv($"| {target} | {m:0.000} {unit} | {m / bound:0.00} of the bound | {(m <= bound ? "met" : "**not met**")} |");

    private static string Ratio(string target, double? ours, double? theirs, double bound, bool lowerIsBetter, string unit, bool strict = false)
    {
        if (ours is not { } o || theirs is not { } t || double.IsNaN(o) || double.IsNaN(t) || t == 0)
        {
            return $"| {target} | not measured | | n/a |";
        }

        var ratio = o / t;
        var met = lowerIsBetter ? (strict ? ratio < bound : ratio <= bound) : ratio >= bound;
        return Inv($"| {target} | {o:0.##} {unit} vs {t:0.##} {unit} | {ratio:0.00} | {(met ? "met" : "**not met**")} |");
    }

    private void WriteChart(string path)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var bars = new List<Bar>();
        var systems = _chartSystems.Where(s => Load.Any(r => r.System == s)).ToArray();
        var ticks = new List<Tick>();
        for (var g = 0; g < _chartScenarios.Length; g++)
        {
            for (var s = 0; s < systems.Length; s++)
            {
                var row = Find(_chartScenarios[g], systems[s]);
                var limit = Find(_chartScenarios[g], "limit");
                if (row is null || limit is null || double.IsNaN(row.CpuMicrosPerMessage) || !(limit.CpuMicrosPerMessage > 0))
                {
                    continue;
                }

                // relative to limit, so scenarios whose absolute costs differ by 100x share one readable axis
                bars.Add(new Bar
                {
                    Position = (g * (systems.Length + 1)) + s,
                    Value = row.CpuMicrosPerMessage / limit.CpuMicrosPerMessage,
                    FillColor = palette.GetColor(s),
                    Label = row.CpuMicrosPerMessage.ToString("0.0", CultureInfo.InvariantCulture) + " µs",
                });
            }

            ticks.Add(new Tick((g * (systems.Length + 1)) + ((systems.Length - 1) / 2.0), _chartScenarios[g]));
        }

        var barPlot = plot.Add.Bars(bars);
        barPlot.ValueLabelStyle.FontSize = 11;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Margins(bottom: 0, top: 0.15);
        for (var s = 0; s < systems.Length; s++)
        {
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = systems[s], FillColor = palette.GetColor(s) });
        }

        var target = plot.Add.HorizontalLine(1.25);
        target.LinePattern = LinePattern.Dashed;
        target.Color = Colors.Gray;
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "fan-out target: 1.25 × limit", LineColor = Colors.Gray, LinePattern = LinePattern.Dashed, LineWidth = 1 });
        plot.ShowLegend(Alignment.UpperLeft);
        plot.Title($"Server CPU per delivered message relative to limit (lower is better; labels: µs), {started:yyyy-MM-dd}, {Environment.ProcessorCount} cores");
        plot.YLabel("server CPU per delivered message, × limit");
        plot.SavePng(path, 1100, 600);
    }

    private static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }
}
