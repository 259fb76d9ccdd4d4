using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace OrleansPush.Guarantees.Tests;

/// <summary>How often each fault kind fires in one schedule (0: never). A schedule draws these from its seed, so
/// schedules differ in what they stress as well as in when.</summary>
public sealed record FaultRates
{
    public double StoreFail { get; init; }
    public double StoreAmbiguous { get; init; }
    public double StoreLandLate { get; init; }
    public double StoreSlow { get; init; }
    public double StreamDrop { get; init; }
    public double StreamDuplicate { get; init; }
    public double StreamDelay { get; init; }
    public double StreamReorder { get; init; }
    public double CallFail { get; init; }
    public double CallAmbiguous { get; init; }
    public double CallSlow { get; init; }

    public override string ToString() => string.Join(" ", GetType().GetProperties()
        .Where(p => p.PropertyType == typeof(double) && (double)p.GetValue(this)! > 0)
        .Select(p => $"{p.Name}={(double)p.GetValue(this)!:0.###}"));
}

/// <summary>
/// Every fault decision of a schedule, drawn from its seed. A decision is a pure function of (seed, site, key, n), where
/// n counts the decisions already taken at that site for that key (a site is a seam and an operation, a key a topic or a
/// gateway and topic): the same seed makes the same decisions in the same order per site and key whatever the threads
/// do, so a failing seed replays its schedule. (Thread timing itself is not replayed: a race may need a few runs.)
/// </summary>
public sealed class FaultPlan(int seed, FaultRates rates, Journal journal)
{
    private readonly ConcurrentDictionary<string, int> _counters = new(StringComparer.Ordinal);
    private volatile bool _active = true;

    public int Seed { get; } = seed;

    public FaultRates Rates { get; } = rates;

    public Journal Journal { get; } = journal;

    /// <summary>While false no fault fires: the schedule settles and is checked.</summary>
    public bool Active => _active;

    public void Stop() => _active = false;

    /// <summary>The next decision at <paramref name="site"/> for <paramref name="key"/>: a value in [0, 1), and a
    /// second, independent one for the fault's size (how long a delay is).</summary>
    public (double Which, double Size) Draw(string site, string key)
    {
        var n = _counters.AddOrUpdate(site + "|" + key, 1, static (_, c) => c + 1);
        var h = Mix((ulong)(uint)Seed, site, key, n);
        return ((h >> 11) * (1.0 / (1UL << 53)), (SplitMix(h) >> 11) * (1.0 / (1UL << 53)));
    }

    /// <summary>Picks one of <paramref name="choices"/> (fault kind and its rate, in order) or null for none.</summary>
    public (T Kind, double Size)? Choose<T>(string site, string key, params (T Kind, double Rate)[] choices)
    {
        if (!_active)
        {
            return null;
        }

        var (which, size) = Draw(site, key);
        var edge = 0.0;
        foreach (var (kind, rate) in choices)
        {
            edge += rate;
            if (which < edge)
            {
                return (kind, size);
            }
        }

        return null;
    }

    private static ulong Mix(ulong seed, string site, string key, int n)
    {
        var h = SplitMix(seed ^ 0x9E3779B97F4A7C15UL);
        foreach (var c in site)
        {
            h = SplitMix(h ^ c);
        }

        h = SplitMix(h ^ 0xFF);
        foreach (var c in key)
        {
            h = SplitMix(h ^ c);
        }

        return SplitMix(h ^ (ulong)n);
    }

    private static ulong SplitMix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }
}

/// <summary>What happened in a schedule, in order, with milliseconds since its start: faults injected, publishes and
/// their answers, connections, subscriptions, and the warnings the silos and gateways logged. A failure prints its
/// tail.</summary>
public sealed class Journal
{
    private const int MaxEntries = 200_000;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly ConcurrentQueue<string> _entries = new();
    private int _count;

    public long ElapsedMs => _clock.ElapsedMilliseconds;

    public void Add(string text)
    {
        if (Interlocked.Increment(ref _count) > MaxEntries)
        {
            _entries.TryDequeue(out _);
        }

        _entries.Enqueue($"{_clock.ElapsedMilliseconds,6} {text}");
    }

    /// <summary>How many entries begin with each of <paramref name="prefixes"/> ("stream drop 12, silo1 killed 1").</summary>
    public string Counts(params string[] prefixes)
    {
        var cut = _entries.Select(e => e[7..]).ToList();
        return string.Join(", ", prefixes.Select(p => (p, n: cut.Count(e => e.StartsWith(p, StringComparison.Ordinal)))).Where(c => c.n > 0).Select(c => $"{c.p} {c.n}"));
    }

    /// <summary>The last <paramref name="count"/> entries (that mention <paramref name="about"/>, when given).</summary>
    public IReadOnlyList<string> Tail(int count, string? about = null) =>
        _entries.Where(e => about is null || e.Contains(about, StringComparison.Ordinal)).TakeLast(count).ToList();
}

/// <summary>Puts the warnings and errors of a silo or gateway into the journal, instead of the console.</summary>
public sealed class JournalLoggerProvider(Journal journal, string host) : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => new Logger(journal, host, categoryName[(categoryName.LastIndexOf('.') + 1)..]);

    public void Dispose()
    {
    }

    private sealed class Logger(Journal journal, string host, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                journal.Add($"log {host} {category}: {formatter(state, exception)}{(exception is null ? string.Empty : " (" + exception.GetType().Name + ": " + exception.Message + ")")}");
            }
        }
    }
}
