using System.Diagnostics;
using System.Runtime.InteropServices;

namespace OrleansPush.Cluster.Tests;

/// <summary>A process a test started (shared by the test projects that run silos and gateways as processes): its
/// output is kept (the last lines, for a failure message), and it stops only by its own PID, politely (SIGTERM) or not
/// (SIGKILL).</summary>
public sealed class NodeProcess : IAsyncDisposable
{
    private const int SigTerm = 15;
    private readonly Process _process;
    private readonly Queue<string> _tail = new();
    private readonly List<(string Text, TaskCompletionSource Seen)> _waits = [];

    private NodeProcess(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    public string Name { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Starts a built project of this repository (<see cref="Built"/>) with <c>dotnet</c>, in its output folder
    /// (as deployed, so it reads its appsettings.json), with <paramref name="settings"/> as command-line configuration.</summary>
    public static NodeProcess StartBuilt(string name, string project, string file, IEnumerable<KeyValuePair<string, string?>> settings)
    {
        var dll = Built(project, file);
        return Start(name, "dotnet", [dll, .. settings.Where(s => s.Value is not null).Select(s => $"--{s.Key}={s.Value}")], Path.GetDirectoryName(dll));
    }

    /// <summary>tests/X/bin/&lt;Configuration&gt;/net10.0/ → &lt;project&gt;/bin/&lt;Configuration&gt;/net10.0/&lt;file&gt;, built by the
    /// test project's (non-referencing) project reference.</summary>
    public static string Built(string project, string file)
    {
        var bin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var root = bin;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "OrleansPush.sln")))
        {
            root = root.Parent;
        }

        var dll = Path.Combine(root?.FullName ?? throw new InvalidOperationException("repository root not found"), project, "bin", bin.Parent!.Name, bin.Name, file);
        return File.Exists(dll) ? dll : throw new FileNotFoundException($"Build the {project} project first", dll);
    }

    public static NodeProcess Start(string name, string fileName, IEnumerable<string> arguments, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {name}");
        var node = new NodeProcess(name, process);
        process.OutputDataReceived += (_, e) => node.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => node.OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return node;
    }

    /// <summary>Waits until the process prints a line containing <paramref name="text"/>.</summary>
    public async Task WaitForOutputAsync(string text, TimeSpan timeout)
    {
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_tail)
        {
            if (_tail.Any(l => l.Contains(text, StringComparison.Ordinal)))
            {
                return;
            }

            _waits.Add((text, seen));
        }

        var exited = _process.WaitForExitAsync();
        var done = await Task.WhenAny(seen.Task, exited, Task.Delay(timeout));
        if (done != seen.Task)
        {
            throw new TimeoutException($"{Name} did not print \"{text}\" within {timeout.TotalSeconds:0} s{(done == exited ? " (it exited)" : string.Empty)}:\n{Tail()}");
        }
    }

    /// <summary>The exit code, once the process has ended and its output has been read to the end.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    /// <summary>The last lines the process wrote (standard output and error).</summary>
    public string Tail()
    {
        lock (_tail)
        {
            return string.Join('\n', _tail);
        }
    }

    /// <summary>SIGTERM: what Kubernetes sends; the process drains or leaves the cluster and exits.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        if (!_process.HasExited && Kill(_process.Id, SigTerm) != 0)
        {
            throw new InvalidOperationException($"could not signal {Name} ({_process.Id})");
        }

        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            KillNow();
            throw new TimeoutException($"{Name} did not stop within {timeout.TotalSeconds:0} s of SIGTERM:\n{Tail()}");
        }
    }

    /// <summary>SIGKILL: no goodbye, no graceful shutdown.</summary>
    public void KillNow()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
    }

    public async ValueTask DisposeAsync()
    {
        KillNow();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
        }

        _process.Dispose();
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_tail)
        {
            _tail.Enqueue(line);
            if (_tail.Count > 200)
            {
                _tail.Dequeue();
            }

            foreach (var wait in _waits.Where(w => line.Contains(w.Text, StringComparison.Ordinal)).ToArray())
            {
                _waits.Remove(wait);
                wait.Seen.TrySetResult();
            }
        }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}

/// <summary>A redis-server of the test's own on loopback, with every write fsynced to its append-only file, so that a
/// restart keeps what it acknowledged.</summary>
public sealed class RedisServer : IAsyncDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("orleanspush-redis-").FullName;
    private NodeProcess? _process;

    public int Port { get; } = Ports.Free();

    public string Address => $"127.0.0.1:{Port}";

    /// <summary>The server's process id while it runs (to pause it with SIGSTOP, as a stalled store).</summary>
    public int Pid => _process?.Pid ?? throw new InvalidOperationException("redis-server is not running");

    public async Task StartAsync()
    {
        _process = NodeProcess.Start("redis-server", "redis-server",
        [
            "--port", Port.ToString(), "--bind", "127.0.0.1", "--dir", _directory, "--save", string.Empty,
            "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
        ]);
        await _process.WaitForOutputAsync("Ready to accept connections", TimeSpan.FromSeconds(20));
    }

    /// <summary>A clean stop (SIGTERM), as a restart by an operator or an orchestrator does it.</summary>
    public async Task StopAsync()
    {
        if (_process is { } process)
        {
            await process.StopAsync(TimeSpan.FromSeconds(20));
            await process.DisposeAsync();
            _process = null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is { } process)
        {
            await process.DisposeAsync();
        }

        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
