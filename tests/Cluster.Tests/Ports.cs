using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace OrleansPush.Cluster.Tests;

/// <summary>
/// Ports for servers a test starts after choosing their port (silo processes, gateway processes, MQTT listeners).
/// They come from below the kernel's ephemeral range (<c>/proc/sys/net/ipv4/ip_local_port_range</c>, 32768-60999 here):
/// a port the OS picked from that range and then released can be taken as the source port of any outgoing connection on
/// the machine before the server binds it, and the server then fails with "address in use". Each test process starts
/// at its own offset and never hands a port out twice, so test processes running side by side rarely try the same one.
/// </summary>
internal static class Ports
{
    private const int Lowest = 15000;
    private static readonly Lock Gate = new();
    private static readonly HashSet<int> Given = [];
    private static readonly (int Low, int High) Range = BelowEphemeral();
    private static int _next = Range.Low + (Environment.ProcessId * 613 % Math.Max(1, Range.High - Range.Low));

    public static int Free()
    {
        lock (Gate)
        {
            var span = Range.High - Range.Low;
            for (var i = 0; i < span; i++)
            {
                var port = Range.Low + ((_next - Range.Low + i) % span);
                if (!Given.Contains(port) && CanBind(port))
                {
                    Given.Add(port);
                    _next = port + 1;
                    return port;
                }
            }
        }

        throw new InvalidOperationException($"no free port between {Range.Low} and {Range.High}");
    }

    private static bool CanBind(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static (int Low, int High) BelowEphemeral()
    {
        var ephemeralLow = 32768;
        try
        {
            var text = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            ephemeralLow = int.Parse(text[0], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
        }

        return ephemeralLow - Lowest >= 1000 ? (Lowest, ephemeralLow) : (1024, Math.Max(2024, ephemeralLow));
    }
}
